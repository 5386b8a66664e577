//! Path MTU per VTEP, learned by the TX worker: a bounded table with explicit time (STYLE §5). The worker
//! fills it from the kernel (`IP_MTU`/`IPV6_MTU` on a connected probe socket, [`crate::io::pmtu::path_mtu`], which
//! includes whatever the kernel learned from ICMP sent by routers) and forgets it when a send fails with
//! `EMSGSIZE` (the path shrank), so the next frame re-probes. Entries also expire after [`PMTU_TTL`], so a
//! path that grew back is noticed. Sans-IO: no socket or clock here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a probed path MTU is trusted (Linux keeps a learned PMTU for `mtu_expires` = 10 min).
pub const PMTU_TTL: Duration = Duration::from_secs(600);
/// VTEPs remembered per worker; beyond it the oldest probe makes room.
pub const PMTU_CAPACITY: usize = 1024;

/// Per-VTEP path MTUs. The map is allocated once with room for `capacity` entries and never grows beyond it,
/// so lookups and inserts on the TX path do not allocate.
#[derive(Debug)]
pub struct PathMtus {
    entries: HashMap<IpAddr, (u32, Instant)>,
    capacity: usize,
}

impl PathMtus {
    pub fn new(capacity: usize) -> Self {
        PathMtus {
            entries: HashMap::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
        }
    }

    /// The outer path MTU to `vtep`, if probed less than [`PMTU_TTL`] ago; `None`: probe it.
    pub fn get(&self, vtep: IpAddr, now: Instant) -> Option<u32> {
        self.entries
            .get(&vtep)
            .filter(|e| now.saturating_duration_since(e.1) < PMTU_TTL)
            .map(|e| e.0)
    }

    /// Record a probe result.
    pub fn learn(&mut self, vtep: IpAddr, mtu: u32, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&vtep) {
            // Full (rare: more VTEPs than the capacity): the oldest probe makes room.
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.1).map(|(k, _)| *k) {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(vtep, (mtu, now));
    }

    /// A send failed with `EMSGSIZE`: some path shrank. Every VTEP is re-probed on its next frame.
    pub fn forget_all(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The inner MTU (largest inner IP packet) over an outer path MTU of `path_mtu` with `overhead` bytes of
/// VXLAN overhead (which counts the inner Ethernet header, see [`crate::wire::vxlan::vxlan_overhead`]).
pub fn inner_mtu(path_mtu: u32, overhead: u32) -> u32 {
    path_mtu.saturating_sub(overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_refresh_and_are_bounded() {
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let c = IpAddr::from([10, 0, 0, 3]);
        let mut t = PathMtus::new(2);
        assert_eq!(t.get(a, t0), None);
        t.learn(a, 1500, t0);
        assert_eq!(t.get(a, t0 + Duration::from_secs(599)), Some(1500));
        assert_eq!(t.get(a, t0 + PMTU_TTL), None, "expired: re-probe");
        t.learn(a, 1400, t0 + Duration::from_secs(1));
        assert_eq!(t.get(a, t0 + Duration::from_secs(2)), Some(1400));
        t.learn(b, 1500, t0 + Duration::from_secs(3));
        t.learn(c, 1500, t0 + Duration::from_secs(4));
        assert_eq!(t.len(), 2, "bounded");
        assert_eq!(
            t.get(a, t0 + Duration::from_secs(5)),
            None,
            "the oldest made room"
        );
        assert_eq!(t.get(c, t0 + Duration::from_secs(5)), Some(1500));
        t.forget_all();
        assert!(t.is_empty());
        assert_eq!(inner_mtu(1400, 50), 1350);
        assert_eq!(inner_mtu(10, 50), 0);
    }
}
