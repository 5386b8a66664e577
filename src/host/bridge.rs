//! A network's bridge address (issue 10 §4, DECISIONS "Networks and IPAM": frames from the bridge's own MAC
//! never enter the TAP). A Linux bridge without an explicit address takes the lowest MAC of its ports, so it
//! changes as containers come and go; a bridge overlayd creates gets a fixed, locally administered address
//! derived from the VNI and the host ([`derived_mac`]), and the daemon re-reads the address of every bridge
//! in housekeeping ([`mac`]) in case someone else changes it.

use super::rtnl::{self, Rtnl};
use super::HostError;
use dataplane::wire::MacAddr;
use std::net::IpAddr;

/// The address overlayd gives a bridge it creates: locally administered unicast (`02:…`), 16 bits of a hash
/// of the host's VTEP address and the 24-bit VNI, so bridges of different networks on one host differ and a
/// bridge recreated after a crash gets the same address back (containers' neighbour caches stay right).
pub fn derived_mac(vni: u32, host: IpAddr) -> MacAddr {
    // FNV-1a over the address bytes: stable across releases and platforms (unlike std's hasher).
    let bytes = match host {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let [.., h1, h0] = h.to_be_bytes();
    let [_, v2, v1, v0] = vni.to_be_bytes();
    MacAddr([0x02, h1 ^ h0.rotate_left(4), h0, v2, v1, v0])
}

/// The current address of link `name`; `Ok(None)` if there is no such link (or it has no Ethernet address).
pub fn mac(name: &str) -> Result<Option<MacAddr>, HostError> {
    let mut rt = Rtnl::open()?;
    Ok(rtnl::get_link(&mut rt, name)?.and_then(|l| l.mac).map(MacAddr))
}

/// Give link `name` the address `mac` (nothing is sent when it already has it).
pub fn set_mac(name: &str, mac: MacAddr) -> Result<(), HostError> {
    let mut rt = Rtnl::open()?;
    rtnl::set_link_mac(&mut rt, name, mac.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_local_unicast_stable_and_differ_per_vni_and_host() {
        let h1: IpAddr = "192.0.2.1".parse().unwrap();
        let h2: IpAddr = "192.0.2.2".parse().unwrap();
        let a = derived_mac(100, h1);
        assert_eq!(a.0[0], 0x02, "locally administered, unicast");
        assert!(a.is_learnable());
        assert_eq!(a, derived_mac(100, h1), "stable");
        assert_ne!(a, derived_mac(101, h1));
        assert_ne!(a, derived_mac(100, h2));
        assert_eq!(&a.0[3..], &[0, 0, 100]);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(derived_mac(0xab_cdef, v6).0[3..], [0xab, 0xcd, 0xef]);
    }
}
