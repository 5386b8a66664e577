//! The start-up check of the overlay MTU against the underlay (issue 9 §3): the TAP's MTU plus the VXLAN
//! overhead must fit the underlay interface and the path to every configured peer. A mismatch is logged as a
//! warning naming the fix, not refused: the data path copes (oversized frames get ICMP "fragmentation needed" /
//! "packet too big" and TSO superframes are cut to the path, see `dataplane::engine::too_big`), but every
//! container pays one lost packet and a PMTU round trip per destination, so the operator should fix it.
//!
//! Must never: touch the network. A pure function of the measured values (the daemon measures).

use std::net::IpAddr;

/// What the daemon measured: the underlay interface carrying the local address and its MTU, and the kernel's
/// path MTU (`IP_MTU`) to each configured peer it could probe.
#[derive(Debug, Clone)]
pub struct UnderlayMtu<'a> {
    pub iface: &'a str,
    pub iface_mtu: u32,
    /// Bytes of VXLAN overhead (50 over IPv4, 70 over IPv6).
    pub overhead: u32,
    pub paths: &'a [(IpAddr, u32)],
}

/// The warning to log when an overlay MTU of `mtu` does not fit `u`, or `None` when it does.
pub fn mismatch(mtu: u32, u: &UnderlayMtu<'_>) -> Option<String> {
    let iface_limit = u.iface_mtu.saturating_sub(u.overhead);
    let worst_path = u.paths.iter().min_by_key(|p| p.1).copied();
    let path_limit = worst_path.map(|(_, m)| m.saturating_sub(u.overhead));
    let limit = path_limit.map_or(iface_limit, |p| p.min(iface_limit));
    if mtu <= limit {
        return None;
    }
    let cause = match worst_path {
        Some((peer, m)) if m.saturating_sub(u.overhead) < iface_limit => format!(
            "the path MTU to peer {peer} is {m}, minus {} bytes of VXLAN overhead = {limit}",
            u.overhead
        ),
        _ => format!(
            "underlay {} has MTU {}, minus {} bytes of VXLAN overhead = {limit}",
            u.iface, u.iface_mtu, u.overhead
        ),
    };
    Some(format!(
        "overlay MTU {mtu} does not fit the underlay: {cause}. Frames over {limit} bytes get ICMP \
         \"fragmentation needed\"/\"packet too big\" (counted as too_big) and TCP segments are cut to fit, \
         but fix it: restart with --mtu {limit}, or raise the underlay MTU to at least {} (ip link set {} mtu \
         {})",
        mtu + u.overhead,
        u.iface,
        mtu + u.overhead
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_mtus_pass() {
        let paths = [("10.0.0.2".parse().unwrap(), 1500)];
        let u = UnderlayMtu {
            iface: "eth0",
            iface_mtu: 1500,
            overhead: 50,
            paths: &paths,
        };
        assert_eq!(mismatch(1450, &u), None);
        assert_eq!(mismatch(1400, &u), None);
    }

    #[test]
    fn a_small_interface_names_the_fix() {
        let u = UnderlayMtu {
            iface: "eth0",
            iface_mtu: 1400,
            overhead: 50,
            paths: &[],
        };
        let w = mismatch(1450, &u).expect("a warning");
        assert!(w.contains("eth0 has MTU 1400"), "{w}");
        assert!(w.contains("--mtu 1350"), "{w}");
        assert!(w.contains("ip link set eth0 mtu 1500"), "{w}");
    }

    #[test]
    fn a_small_path_names_the_peer() {
        let paths = [
            ("fd00::2".parse().unwrap(), 1500),
            ("fd00::3".parse().unwrap(), 1350),
        ];
        let u = UnderlayMtu {
            iface: "eth0",
            iface_mtu: 1500,
            overhead: 70,
            paths: &paths,
        };
        let w = mismatch(1430, &u).expect("a warning");
        assert!(w.contains("peer fd00::3 is 1350"), "{w}");
        assert!(w.contains("--mtu 1280"), "{w}");
        assert_eq!(mismatch(1280, &u), None);
    }
}
