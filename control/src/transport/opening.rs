//! Who of a pair opens the gossip connection. While a cluster forms both members of most pairs want to
//! send to each other within the same fraction of a second, and each mutually authenticated handshake
//! costs both of them certificate signatures and verifications on a CPU-bound machine. So before a
//! member dials a peer it looks at what the peer is already doing:
//! - a handshake from the peer's address is in progress on our accept side (quinn hands the accept loop
//!   the connection at the peer's first Initial): wait for it, at most [`Waits::incoming`] from its start;
//!   when it completes, its connection is adopted and carries our messages too (no dial); when it fails,
//!   the wait ends at once and we dial;
//! - we answered an Initial from the peer's address with a Retry within [`Waits::retry`]: the peer's
//!   validated Initial is one round trip away, wait for it as above;
//! - of a pair, the member with the higher address waits [`Waits::grace`] after its first sender asked
//!   before dialling, so that when both start at the same moment the lower one's Initial arrives first.
//!
//! This is only a scheduling hint: whichever connection is used, it is mutually authenticated, the node id
//! comes from the CA-verified certificate and the revocation checks are those of every connection. A
//! sender is never held longer than these bounds: a one-sided sender at most by the grace, and a forged
//! Initial (a spoofed source gets only the Retry) at most by [`Waits::retry`].
//! Must never: keep state per source address without bound (the map is capped; see [`MAX_TRACKED`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sender may hold its dial (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(super) struct Waits {
    /// The higher address of a pair waits this long after its first sender asked.
    pub(super) grace: Duration,
    /// Longest wait for a handshake the peer started towards us.
    pub(super) incoming: Duration,
    /// Wait after we sent the peer's address a Retry (its validated Initial is one round trip away).
    pub(super) retry: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            grace: Duration::from_millis(30),
            incoming: Duration::from_secs(1),
            retry: Duration::from_millis(100),
        }
    }
}

/// Source addresses tracked at most. Entries with a handshake in progress are bounded by the accept
/// side's caps (`crate::exposure`); Retry marks beyond this are not recorded (the sender then just dials).
pub(super) const MAX_TRACKED: usize = 4096;

#[derive(Debug, Default)]
struct Seen {
    /// Handshakes from this address in progress on our accept side, and when the first of them began.
    handshakes: usize,
    since: Option<Instant>,
    /// When we last answered an Initial from this address with a Retry.
    retried: Option<Instant>,
}

/// What the accept side saw of each source address recently.
#[derive(Debug, Default)]
pub(super) struct Opening {
    seen: Mutex<HashMap<SocketAddr, Seen>>,
}

impl Opening {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The accept loop answered an Initial from `from` with a Retry.
    pub(super) fn retried(&self, from: SocketAddr, now: Instant, waits: &Waits) {
        let mut m = self.map();
        if !m.contains_key(&from) && m.len() >= MAX_TRACKED {
            m.retain(|_, s| s.handshakes > 0 || s.retried.is_some_and(|t| now < t + waits.retry));
            if m.len() >= MAX_TRACKED {
                return;
            }
        }
        m.entry(from).or_default().retried = Some(now);
    }

    /// A handshake from `from` begins on our accept side (pair with [`Opening::handshake_ended`]).
    pub(super) fn handshake_started(&self, from: SocketAddr, now: Instant) {
        let mut m = self.map();
        let s = m.entry(from).or_default();
        if s.handshakes == 0 {
            s.since = Some(now);
        }
        s.handshakes += 1;
    }

    /// That handshake completed or failed.
    pub(super) fn handshake_ended(&self, from: SocketAddr) {
        let mut m = self.map();
        if let Some(s) = m.get_mut(&from) {
            s.handshakes = s.handshakes.saturating_sub(1);
            if s.handshakes == 0 {
                // The Retry mark belonged to this handshake's first Initial: it is over too.
                m.remove(&from);
            }
        }
    }

    /// Until when a sender to `peer` should hold its dial because of what the peer is doing, if at all.
    pub(super) fn peer_busy_until(&self, peer: SocketAddr, waits: &Waits) -> Option<Instant> {
        let m = self.map();
        let s = m.get(&peer)?;
        let incoming = s.since.filter(|_| s.handshakes > 0).map(|t| t + waits.incoming);
        let retried = s.retried.map(|t| t + waits.retry);
        incoming.max(retried)
    }
}

/// Until when a sender should hold its dial from `me` to `peer`, first asked for at `wanted`; `None`: dial
/// now. `busy` is [`Opening::peer_busy_until`].
pub(super) fn hold_until(
    me: SocketAddr,
    peer: SocketAddr,
    wanted: Instant,
    busy: Option<Instant>,
    now: Instant,
    waits: &Waits,
) -> Option<Instant> {
    let grace = (me > peer).then(|| wanted + waits.grace);
    grace.max(busy).filter(|t| now < *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The lower address of a pair dials at once, the higher one after the grace; a handshake or a Retry
    /// from the peer holds either side, bounded, and a finished handshake releases it at once.
    #[test]
    fn who_waits_and_how_long() {
        let w = Waits::default();
        let (lo, hi) = (addr("10.0.0.1:7948"), addr("10.0.0.2:7948"));
        let t0 = Instant::now();
        let o = Opening::default();
        assert_eq!(hold_until(lo, hi, t0, o.peer_busy_until(hi, &w), t0, &w), None);
        assert_eq!(
            hold_until(hi, lo, t0, o.peer_busy_until(lo, &w), t0, &w),
            Some(t0 + w.grace)
        );
        assert_eq!(hold_until(hi, lo, t0, None, t0 + w.grace, &w), None, "grace over");

        // The peer's handshake towards the lower one holds it too, at most `incoming`.
        o.handshake_started(hi, t0);
        let busy = o.peer_busy_until(hi, &w);
        assert_eq!(busy, Some(t0 + w.incoming));
        assert_eq!(hold_until(lo, hi, t0, busy, t0, &w), Some(t0 + w.incoming));
        assert_eq!(hold_until(lo, hi, t0, busy, t0 + w.incoming, &w), None);
        o.handshake_ended(hi);
        assert_eq!(o.peer_busy_until(hi, &w), None, "ended: dial at once");

        // A Retry to the peer's address holds for `retry`; the lower side's grace is none.
        o.retried(hi, t0, &w);
        assert_eq!(o.peer_busy_until(hi, &w), Some(t0 + w.retry));
        assert_eq!(
            hold_until(lo, hi, t0, o.peer_busy_until(hi, &w), t0 + w.retry, &w),
            None
        );
    }

    /// Spoofed Initials from many sources cannot grow the map beyond [`MAX_TRACKED`].
    #[test]
    fn retry_marks_are_bounded() {
        let w = Waits::default();
        let o = Opening::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            o.retried(SocketAddr::from((i.to_be_bytes(), 1)), t0, &w);
        }
        assert_eq!(o.map().len(), MAX_TRACKED);
        // Once the marks are stale, new sources are recorded again (the stale ones pruned).
        let later = t0 + w.retry;
        o.retried(addr("10.9.9.9:1"), later, &w);
        assert_eq!(o.map().len(), 1);
    }
}
