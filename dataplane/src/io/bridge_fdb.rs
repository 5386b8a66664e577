//! Read a Linux bridge's forwarding table (`bridge fdb show br <bridge>`, `RTM_GETNEIGH` dump of
//! `AF_BRIDGE`): which MACs sit on which port. overlayd uses it to know which MACs are really behind its own
//! bridge (a container's veth, not the TAP), which is what makes an FDB entry `local`. Runs about once a
//! second off the hot path; one netlink socket per call.

use std::io::Cursor;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Nda, Ntf, Nud, RtAddrFamily, Rtm, Rtn};
use neli::rtnl::{Ndmsg, NdmsgBuilder};
use neli::FromBytesWithInput;

use super::netlink::{kernel_err, proto, require_link, NetlinkError, Rtnl};
use crate::wire::MacAddr;

/// One MAC on a bridge port other than the excluded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeMac {
    pub mac: MacAddr,
    /// The bridge's or a port's own address (`permanent`), not one learned from traffic or configured.
    pub permanent: bool,
}

/// The MACs the bridge `bridge` has on any of its ports except `exclude_port` (our TAP), and its own
/// addresses. Entries the bridge has aged but not yet removed (`stale`) are left out.
pub fn bridge_macs(bridge: &str, exclude_port: &str) -> Result<Vec<BridgeMac>, NetlinkError> {
    const OP: &str = "list bridge fdb";
    let mut rt = Rtnl::open()?;
    let br = require_link(&mut rt, bridge)?.index;
    let tap = require_link(&mut rt, exclude_port)?.index;
    // A bare ndmsg (no IFLA_MASTER filter: that needs an ifinfomsg header) dumps every device's entries; the
    // kernel accepts this legacy form (rtnetlink.c `valid_fdb_dump_legacy`). We filter below.
    let msg = NdmsgBuilder::default()
        .ndm_family(RtAddrFamily::UnrecognizedConst(libc::AF_BRIDGE as u8))
        .ndm_index(0)
        .ndm_state(Nud::empty())
        .ndm_flags(Ntf::empty())
        .ndm_type(Rtn::Unspec)
        .build()
        .map_err(|e| proto(OP, e))?;
    let replies = rt
        .request(OP, Rtm::Getneigh, NlmF::DUMP, msg)
        .map_err(|e| kernel_err(OP, bridge, e))?;
    let mut out = Vec::new();
    for bytes in &replies {
        let m = Ndmsg::from_bytes_with_input(&mut Cursor::new(&bytes[..]), bytes.len())
            .map_err(|e| proto(OP, e))?;
        if let Some(b) = bridge_entry(&m, br, tap) {
            out.push(b);
        }
    }
    out.sort_unstable_by_key(|b| b.mac);
    out.dedup_by_key(|b| b.mac);
    Ok(out)
}

/// The entry as a [`BridgeMac`] if it belongs to bridge `br` (NDA_MASTER, or the bridge device itself) on a
/// port other than `tap`, and is live.
fn bridge_entry(m: &Ndmsg, br: i32, tap: i32) -> Option<BridgeMac> {
    let index = *m.ndm_index();
    if index == tap || m.ndm_state().contains(Nud::STALE) {
        return None;
    }
    let attrs = m.rtattrs().get_attr_handle();
    let master = attrs.get_attr_payload_as::<u32>(Nda::Master).ok();
    if master.and_then(|x| i32::try_from(x).ok()) != Some(br) && index != br {
        return None;
    }
    let lladdr = attrs.get_attribute(Nda::Lladdr)?;
    let mac = <[u8; 6]>::try_from(lladdr.rta_payload().as_ref()).ok()?;
    Some(BridgeMac {
        mac: MacAddr(mac),
        permanent: m.ndm_state().contains(Nud::PERMANENT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::netlink::{ensure_bridge, set_master, set_up};
    use crate::io::testns::in_netns;
    use std::process::Command;

    /// `ip`/`bridge` run in this thread's namespace (a forked child inherits it).
    fn iproute2(cmd: &str, args: &[&str]) {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("this test needs `{cmd}` (apt-get install iproute2): {e}"));
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    }

    /// Bridge `br0` with veth ports `d1` and `d2` (`d2` stands for the TAP, excluded).
    #[test]
    fn lists_the_bridge_macs_except_the_excluded_port() {
        in_netns(|| {
            ensure_bridge("br0").unwrap();
            for d in ["d1", "d2"] {
                let peer = format!("{d}p");
                iproute2("ip", &["link", "add", d, "type", "veth", "peer", "name", &peer]);
                set_master(d, "br0").unwrap();
                set_up(d).unwrap();
            }
            iproute2(
                "bridge",
                &["fdb", "add", "02:00:00:00:00:aa", "dev", "d1", "master", "static"],
            );
            iproute2(
                "bridge",
                &["fdb", "add", "02:00:00:00:00:bb", "dev", "d2", "master", "static"],
            );
            let a = bridge_macs("br0", "d2").unwrap();
            let b = bridge_macs("br0", "d1").unwrap();
            let aa = MacAddr([2, 0, 0, 0, 0, 0xaa]);
            let bb = MacAddr([2, 0, 0, 0, 0, 0xbb]);
            let find = |v: &[BridgeMac], m| v.iter().find(|x| x.mac == m).copied();
            assert_eq!(
                find(&a, aa),
                Some(BridgeMac {
                    mac: aa,
                    permanent: false
                }),
                "{a:?}"
            );
            assert_eq!(find(&a, bb), None, "entry on the excluded port: {a:?}");
            assert_eq!(
                find(&b, bb),
                Some(BridgeMac {
                    mac: bb,
                    permanent: false
                }),
                "{b:?}"
            );
            assert_eq!(find(&b, aa), None, "{b:?}");
            // Apart from the configured entries: the bridge's own address (in both) and each port's own
            // (permanent) address, which is listed only while its port is not the excluded one.
            let own = |v: &[BridgeMac]| {
                v.iter()
                    .filter(|x| x.mac != aa && x.mac != bb)
                    .copied()
                    .collect::<Vec<_>>()
            };
            let (oa, ob) = (own(&a), own(&b));
            assert!(
                oa.iter().all(|x| x.permanent) && ob.iter().all(|x| x.permanent),
                "{a:?} {b:?}"
            );
            let only_a: Vec<_> = oa.iter().filter(|x| !ob.contains(x)).collect();
            let only_b: Vec<_> = ob.iter().filter(|x| !oa.contains(x)).collect();
            assert_eq!(
                (only_a.len(), only_b.len()),
                (1, 1),
                "d1's address vs d2's: {a:?} {b:?}"
            );
            assert!(matches!(
                bridge_macs("nosuchbr", "d2"),
                Err(NetlinkError::NoSuchDevice { .. })
            ));
        });
    }
}
