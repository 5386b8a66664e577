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
use dataplane::wire::MacAddr;

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
