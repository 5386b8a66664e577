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
//! sender is never held longer than these bounds: a one-sided sender at most by the grace, and in all at
//! most [`Waits::incoming`] from when the first sender of an episode asked ([`Wanted`]), whatever the
//! accept side keeps seeing. A forged Initial (a spoofed source gets only the Retry) holds an episode at
//! most [`Waits::retry`] once: later Retry marks of the same episode do not extend it.
//! Must never: keep state per source address without bound (the map is capped; see [`MAX_TRACKED`]),
//! nor let what unauthenticated packets show hold a dial without a total bound.

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
    /// The lower address of a pair refuses the higher one's Initial only while its own dial is younger
    /// than this (`Pool::refuse_crossing`): long enough for our Initial, a Retry round and a CPU-bound
    /// accept loop to get our handshake going at the peer (the peer then holds its own dial instead
    /// of crossing ours), short against the 1 s the refused peer waits. An older dial of ours has
    /// likely lost its Initial or met a peer that was down: the peer's connection is accepted then.
    pub(super) young: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            grace: Duration::from_millis(30),
            incoming: Duration::from_secs(1),
            retry: Duration::from_millis(100),
            young: YOUNG_DIAL,
        }
    }
}

/// Default of [`Waits::young`] (also how long a relay waits before asking a refusing admitter again).
pub(crate) const YOUNG_DIAL: Duration = Duration::from_millis(200);

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
    seen: Mutex<Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    map: HashMap<SocketAddr, Seen>,
    /// When a full map was last pruned of stale Retry marks (at most once per [`Waits::retry`], so a
    /// flood of new spoofed sources does not scan the map under the lock for every Initial).
    pruned: Option<Instant>,
}

impl Opening {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// The accept loop answered an Initial from `from` with a Retry.
    pub(super) fn retried(&self, from: SocketAddr, now: Instant, waits: &Waits) {
        let mut t = self.lock();
        let Tracked { map: m, pruned } = &mut *t;
        if !m.contains_key(&from) && m.len() >= MAX_TRACKED {
            if pruned.is_some_and(|p| now < p + waits.retry) {
                return;
            }
            *pruned = Some(now);
            m.retain(|_, s| s.handshakes > 0 || s.retried.is_some_and(|t| now < t + waits.retry));
            if m.len() >= MAX_TRACKED {
                return;
            }
        }
        m.entry(from).or_default().retried = Some(now);
    }

    /// A handshake from `from` begins on our accept side (pair with [`Opening::handshake_ended`]).
    pub(super) fn handshake_started(&self, from: SocketAddr, now: Instant) {
        let mut t = self.lock();
        let m = &mut t.map;
        let s = m.entry(from).or_default();
        if s.handshakes == 0 {
            s.since = Some(now);
        }
        s.handshakes += 1;
    }

    /// That handshake completed or failed.
    pub(super) fn handshake_ended(&self, from: SocketAddr) {
        let mut t = self.lock();
        let m = &mut t.map;
        if let Some(s) = m.get_mut(&from) {
            s.handshakes = s.handshakes.saturating_sub(1);
            if s.handshakes == 0 {
                // The Retry mark belonged to this handshake's first Initial: it is over too.
                m.remove(&from);
            }
        }
    }

    /// Until when a sender to `peer` should hold its dial for a handshake from the peer in progress on
    /// our accept side, if one is.
    pub(super) fn peer_busy_until(&self, peer: SocketAddr, waits: &Waits) -> Option<Instant> {
        let t = self.lock();
        let s = t.map.get(&peer)?;
        s.since.filter(|_| s.handshakes > 0).map(|t| t + waits.incoming)
    }

    /// Until when the last Retry we sent to `peer`'s address holds a sender, if one does.
    pub(super) fn retried_until(&self, peer: SocketAddr, waits: &Waits) -> Option<Instant> {
        let t = self.lock();
        t.map.get(&peer)?.retried.map(|t| t + waits.retry)
    }
}

/// One episode in which senders to a peer want a connection while none is open or dialled: from the
/// first sender's ask until a dial starts or the peer's connection is adopted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    since: Instant,
    /// The hold of the first live Retry mark seen in this episode (later marks do not extend it).
    retry_until: Option<Instant>,
    /// A sender of this episode carries a SWIM Announce (a join or re-announce): its receiver does not
    /// know us yet and will not dial us, so the grace would only delay it (a joiner's first message
    /// to its seed, a restarted node's to every member).
    pub(super) announce: bool,
}

impl Wanted {
    pub(super) fn new(now: Instant) -> Self {
        Wanted {
            since: now,
            retry_until: None,
            announce: false,
        }
    }

    /// The handshake the Retry led to is over (it failed): no Retry mark holds this episode any more.
    pub(super) fn retry_over(&mut self, now: Instant) {
        self.retry_until = Some(now);
    }

    /// Until when a sender of this episode should hold its dial from `me` to `peer`; `None`: dial now.
    /// `crossed`: the peer refused our last dial, wait for its own until then. Never past
    /// `since + waits.incoming`.
    pub(super) fn hold_until(
        &mut self,
        me: SocketAddr,
        peer: SocketAddr,
        opening: &Opening,
        crossed: Option<Instant>,
        now: Instant,
        waits: &Waits,
    ) -> Option<Instant> {
        if self.retry_until.is_none() {
            self.retry_until = opening.retried_until(peer, waits).filter(|t| now < *t);
        }
        let busy = opening
            .peer_busy_until(peer, waits)
            .max(self.retry_until)
            .max(crossed);
        hold_until(me, peer, self.since, busy, now, waits, !self.announce)
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
    grace: bool,
) -> Option<Instant> {
    let grace = (grace && me > peer).then(|| wanted + waits.grace);
    grace
        .max(busy)
        .map(|t| t.min(wanted + waits.incoming))
        .filter(|t| now < *t)
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
        assert_eq!(
            hold_until(lo, hi, t0, o.peer_busy_until(hi, &w), t0, &w, true),
            None
        );
        assert_eq!(
            hold_until(hi, lo, t0, o.peer_busy_until(lo, &w), t0, &w, true),
            Some(t0 + w.grace)
        );
        assert_eq!(
            hold_until(hi, lo, t0, None, t0 + w.grace, &w, true),
            None,
            "grace over"
        );

        // The peer's handshake towards the lower one holds it too, at most `incoming`.
        o.handshake_started(hi, t0);
        let busy = o.peer_busy_until(hi, &w);
        assert_eq!(busy, Some(t0 + w.incoming));
        assert_eq!(hold_until(lo, hi, t0, busy, t0, &w, true), Some(t0 + w.incoming));
        assert_eq!(hold_until(lo, hi, t0, busy, t0 + w.incoming, &w, true), None);
        o.handshake_ended(hi);
        assert_eq!(o.peer_busy_until(hi, &w), None, "ended: dial at once");

        // A Retry to the peer's address holds for `retry`; the lower side's grace is none.
        o.retried(hi, t0, &w);
        assert_eq!(o.retried_until(hi, &w), Some(t0 + w.retry));
        let mut e = Wanted::new(t0);
        assert_eq!(e.hold_until(lo, hi, &o, None, t0, &w), Some(t0 + w.retry));
        assert_eq!(e.hold_until(lo, hi, &o, None, t0 + w.retry, &w), None);
    }

    /// Forged Initials from a member's address, each answered with a Retry, cannot hold our dial to it:
    /// only the first live mark of an episode counts, and no hold of any kind (marks, a handshake in
    /// progress, a crossing) lasts past `incoming` from when the episode began.
    #[test]
    fn repeated_retry_marks_cannot_hold_a_dial_past_the_cap() {
        let w = Waits::default();
        let (lo, hi) = (addr("10.0.0.1:7948"), addr("10.0.0.2:7948"));
        let t0 = Instant::now();
        let o = Opening::default();
        let mut e = Wanted::new(t0);
        let step = w.retry * 9 / 10;
        let mut now = t0;
        o.retried(hi, now, &w);
        assert_eq!(e.hold_until(lo, hi, &o, None, now, &w), Some(t0 + w.retry));
        // A new forged Initial just before each hold ends: the episode's hold does not move.
        for _ in 0..3 {
            now += step;
            o.retried(hi, now, &w);
            assert!(e.hold_until(lo, hi, &o, None, now, &w) <= Some(t0 + w.retry));
        }
        assert_eq!(e.hold_until(lo, hi, &o, None, t0 + w.retry, &w), None, "dial");

        // Whatever the accept side shows, a hold ends `incoming` after the episode began.
        let mut e = Wanted::new(t0);
        let crossed = Some(t0 + w.incoming * 5);
        o.handshake_started(hi, t0 + w.incoming / 2);
        o.retried(hi, t0 + w.incoming - step, &w);
        let cap = t0 + w.incoming;
        assert_eq!(e.hold_until(lo, hi, &o, crossed, t0, &w), Some(cap));
        assert_eq!(e.hold_until(lo, hi, &o, crossed, cap - step, &w), Some(cap));
        assert_eq!(e.hold_until(lo, hi, &o, crossed, cap, &w), None, "capped");
        assert_eq!(
            hold_until(lo, hi, t0, Some(t0 + w.incoming * 9), cap, &w, true),
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
        assert_eq!(o.len(), MAX_TRACKED);
        // Once the marks are stale, new sources are recorded again (the stale ones pruned).
        let later = t0 + w.retry;
        o.retried(addr("10.9.9.9:1"), later, &w);
        assert_eq!(o.len(), 1);
    }

    /// With the map full of live marks, a flood of new sources prunes (scans the map) at most once per
    /// Retry interval, not once per Initial: a source arriving right after a prune is not recorded even
    /// if the marks have gone stale meanwhile; it is once the interval since the last prune is over.
    #[test]
    fn a_full_map_is_pruned_at_most_once_per_retry_interval() {
        let w = Waits::default();
        let o = Opening::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            o.retried(SocketAddr::from((i.to_be_bytes(), 1)), t0, &w);
        }
        let half = t0 + w.retry / 2;
        o.retried(addr("10.9.9.1:1"), half, &w);
        assert_eq!(o.len(), MAX_TRACKED, "pruned, nothing stale yet");
        // Every mark is stale now, but the last prune was less than an interval ago: no scan.
        o.retried(addr("10.9.9.2:1"), t0 + w.retry, &w);
        assert_eq!(o.len(), MAX_TRACKED, "no second scan within the interval");
        o.retried(addr("10.9.9.3:1"), half + w.retry, &w);
        assert_eq!(o.len(), 1, "pruned again after the interval");
    }
}
