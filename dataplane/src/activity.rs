//! When each static peer's last datagram arrived: `overlayctl peers` shows it and calls a peer `silent` once it
//! has sent nothing for a while (a kernel VTEP cannot answer a probe, so silence is all we can know about it).
//!
//! The RX path records a datagram with one relaxed store into a fixed table built at start-up (a linear scan
//! over the few static peers; no lock, no allocation). Must never grow at run time: cluster members are
//! tracked by the control plane instead.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Peers tracked at most (a static full mesh larger than this should use the control plane).
pub const MAX_TRACKED_PEERS: usize = 256;

#[derive(Debug)]
pub struct PeerActivity {
    epoch: Instant,
    /// Peer address and nanoseconds since `epoch` + 1 of its last datagram (0: never).
    slots: Box<[(IpAddr, AtomicU64)]>,
}

impl PeerActivity {
    pub fn new(epoch: Instant, peers: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut v: Vec<IpAddr> = peers.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        v.truncate(MAX_TRACKED_PEERS);
        PeerActivity {
            epoch,
            slots: v.into_iter().map(|ip| (ip, AtomicU64::new(0))).collect(),
        }
    }

    /// A datagram from `ip` arrived at `now`; ignored for addresses not tracked.
    #[inline]
    pub fn saw(&self, ip: IpAddr, now: Instant) {
        if let Some((_, t)) = self.slots.iter().find(|(p, _)| *p == ip) {
            let ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
            t.store(ns.saturating_add(1), Relaxed);
        }
    }

    /// How long ago `ip` last sent a datagram, `None` if never (or not tracked).
    pub fn since_last(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let (_, t) = self.slots.iter().find(|(p, _)| *p == ip)?;
        match t.load(Relaxed) {
            0 => None,
            ns => Some(now.saturating_duration_since(self.epoch + Duration::from_nanos(ns - 1))),
        }
    }

    pub fn peers(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.slots.iter().map(|(p, _)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_tracked_peers() {
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 2]);
        let b = IpAddr::from([10, 0, 0, 3]);
        let act = PeerActivity::new(t0, [a, b, a]);
        assert_eq!(act.peers().count(), 2);
        assert_eq!(act.since_last(a, t0), None);
        act.saw(a, t0 + Duration::from_secs(1));
        act.saw(IpAddr::from([10, 0, 0, 9]), t0);
        assert_eq!(
            act.since_last(a, t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(act.since_last(b, t0 + Duration::from_secs(3)), None);
        assert_eq!(act.since_last(IpAddr::from([10, 0, 0, 9]), t0), None);
    }
}
