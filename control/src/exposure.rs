//! Exposure of the QUIC port: what an unauthenticated sender can make a member spend, and the counters
//! that show it.
//!
//! The gossip endpoint must accept handshakes from strangers (joiners have no certificate yet), so:
//! - every new connection from an address that has not proven it receives our packets gets a stateless
//!   QUIC Retry first (RFC 9000 §8.1): spoofed sources never reach the TLS handshake; an address proves
//!   it by answering the Retry, or by presenting a one-use token this endpoint sent to that IP over an
//!   earlier connection (`transport::tokens`);
//! - per source IP, at most [`Limits::per_source`] connections may be in their handshake or in an
//!   unauthenticated join at once, and new ones are admitted at [`Limits::rate_per_s`] (burst
//!   [`Limits::burst`]); the excess is ignored (no answer, no state);
//! - in total, [`Limits::handshakes`] TLS handshakes run at once; more wait in a queue of at most
//!   [`Limits::queued`] (DECISIONS: at least 64, queued rather than refused, so 32 joiners all get in).
//!
//! Membership keeps its own time budget: SWIM runs in its own task (the pump) over already-established
//! authenticated connections, and join work runs in separate tasks bounded by these limits and by
//! per-step timeouts, so a flood from one source can take at most `per_source` handshake slots and never
//! delays a probe. Must never: block on a lock across an await, or keep per-source state unbounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

/// How much the QUIC port gives away to unauthenticated senders.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections per source IP in handshake or unauthenticated join at once.
    pub per_source: usize,
    /// New connections per second per source IP (token bucket refill) ...
    pub rate_per_s: f64,
    /// ... and its burst.
    pub burst: f64,
    /// Concurrent TLS handshakes in total.
    pub handshakes: usize,
    /// Connections admitted past the per-source checks but not yet finished, in total (handshaking,
    /// queued for a handshake slot, or serving a join).
    pub queued: usize,
    /// Most source addresses tracked; beyond it, idle ones are forgotten first.
    pub sources: usize,
    /// A handshake that has not completed by then is abandoned.
    pub handshake_timeout: Duration,
    /// A member's whole side of one join or relay connection (request, relay, answer).
    pub join_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_source: 8,
            rate_per_s: 32.0,
            burst: 64.0,
            handshakes: 64,
            queued: 1024,
            sources: 4096,
            handshake_timeout: Duration::from_secs(5),
            join_timeout: crate::admission::JOIN_SERVE_TIMEOUT,
        }
    }
}

/// Counters of the QUIC port, shown under `quic` in `overlayctl stats`.
#[derive(Debug, Default)]
pub struct QuicStats {
    retries: AtomicU64,
    token_validated: AtomicU64,
    handshakes: AtomicU64,
    handshake_failures: AtomicU64,
    refused_source_busy: AtomicU64,
    refused_source_rate: AtomicU64,
    refused_overload: AtomicU64,
    join_requests: AtomicU64,
    joins_granted: AtomicU64,
    joins_refused: AtomicU64,
    join_timeouts: AtomicU64,
    joins_relayed: AtomicU64,
    dials: AtomicU64,
    dial_failures: AtomicU64,
    dial_ms_total: AtomicU64,
    dial_ms_max: AtomicU64,
    sends_dropped_backoff: AtomicU64,
    dial_lost_packets: AtomicU64,
    dials_avoided: AtomicU64,
    dials_crossed: AtomicU64,
    refused_crossing: AtomicU64,
}

/// A copy of [`QuicStats`] for JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QuicSnapshot {
    pub retries: u64,
    /// Connections that skipped the Retry with a one-use address-validation token from an earlier
    /// connection (`transport::tokens`).
    pub token_validated: u64,
    pub handshakes: u64,
    pub handshake_failures: u64,
    pub refused_source_busy: u64,
    pub refused_source_rate: u64,
    pub refused_overload: u64,
    pub join_requests: u64,
    pub joins_granted: u64,
    pub joins_refused: u64,
    pub join_timeouts: u64,
    pub joins_relayed: u64,
    /// Gossip connections this node opened to members (dials), those that failed (the peer was then
    /// skipped for `DIAL_BACKOFF`), the milliseconds the dials took (sum and longest), and messages
    /// dropped because their peer was in that back-off.
    pub dials: u64,
    pub dial_failures: u64,
    pub dial_ms_total: u64,
    pub dial_ms_max: u64,
    pub sends_dropped_backoff: u64,
    /// Packets QUIC declared lost during our dials (each costs a retransmission timeout).
    pub dial_lost_packets: u64,
    /// Dials not made: a sender held its dial while the member's own handshake towards us was under way
    /// (or for the grace of the higher address of a pair), and the member's connection came first.
    pub dials_avoided: u64,
    /// Dials of ours the member refused at its first packet because its own dial to us was under way
    /// (it has the lower address); no handshake was made, we used its connection. Not in `dials`.
    pub dials_crossed: u64,
    /// New connections we refused that way (our own young dial to that member was under way). Counted
    /// before address validation: Initials with a spoofed source address count too.
    pub refused_crossing: u64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl QuicStats {
    pub fn snapshot(&self) -> QuicSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QuicSnapshot {
            retries: g(&self.retries),
            token_validated: g(&self.token_validated),
            handshakes: g(&self.handshakes),
            handshake_failures: g(&self.handshake_failures),
            refused_source_busy: g(&self.refused_source_busy),
            refused_source_rate: g(&self.refused_source_rate),
            refused_overload: g(&self.refused_overload),
            join_requests: g(&self.join_requests),
            joins_granted: g(&self.joins_granted),
            joins_refused: g(&self.joins_refused),
            join_timeouts: g(&self.join_timeouts),
            joins_relayed: g(&self.joins_relayed),
            dials: g(&self.dials),
            dial_failures: g(&self.dial_failures),
            dial_ms_total: g(&self.dial_ms_total),
            dial_ms_max: g(&self.dial_ms_max),
            sends_dropped_backoff: g(&self.sends_dropped_backoff),
            dial_lost_packets: g(&self.dial_lost_packets),
            dials_avoided: g(&self.dials_avoided),
            dials_crossed: g(&self.dials_crossed),
            refused_crossing: g(&self.refused_crossing),
        }
    }
    /// A dial to a member ended (`conn`: connected) after `took`.
    pub(crate) fn count_dial(&self, conn: Option<&quinn::Connection>, took: Duration) {
        inc(&self.dials);
        match conn {
            Some(c) => {
                self.dial_lost_packets
                    .fetch_add(c.stats().path.lost_packets, Ordering::Relaxed);
            }
            None => inc(&self.dial_failures),
        }
        let ms = took.as_millis() as u64;
        self.dial_ms_total.fetch_add(ms, Ordering::Relaxed);
        self.dial_ms_max.fetch_max(ms, Ordering::Relaxed);
    }
    pub(crate) fn count_dial_avoided(&self) {
        inc(&self.dials_avoided)
    }
    pub(crate) fn count_dial_crossed(&self) {
        inc(&self.dials_crossed)
    }
    pub(crate) fn count_refused_crossing(&self) {
        inc(&self.refused_crossing)
    }
    pub(crate) fn count_backoff_drop(&self) {
        inc(&self.sends_dropped_backoff)
    }
    pub(crate) fn count_retry(&self) {
        inc(&self.retries)
    }
    pub(crate) fn count_token_validated(&self) {
        inc(&self.token_validated)
    }
    pub(crate) fn count_handshake(&self, ok: bool) {
        inc(if ok {
            &self.handshakes
        } else {
            &self.handshake_failures
        })
    }
    pub(crate) fn count_refusal(&self, r: Refusal) {
        inc(match r {
            Refusal::SourceBusy => &self.refused_source_busy,
            Refusal::SourceRate => &self.refused_source_rate,
            Refusal::Overloaded => &self.refused_overload,
        })
    }
    pub(crate) fn count_join_request(&self) {
        inc(&self.join_requests)
    }
    pub(crate) fn count_join_granted(&self) {
        inc(&self.joins_granted)
    }
    pub(crate) fn count_join_refused(&self) {
        inc(&self.joins_refused)
    }
    pub(crate) fn count_join_timeout(&self) {
        inc(&self.join_timeouts)
    }
    pub(crate) fn count_relayed(&self) {
        inc(&self.joins_relayed)
    }
}

/// Why a new connection was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source already has `per_source` connections in progress.
    SourceBusy,
    /// The source exceeded its rate.
    SourceRate,
    /// Too many connections in progress in total, or too many sources tracked.
    Overloaded,
}

#[derive(Debug)]
struct Source {
    active: usize,
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
struct Table {
    sources: HashMap<IpAddr, Source>,
    in_progress: usize,
}

/// Admission control for new QUIC connections. Pure bookkeeping (time is passed in) plus the handshake
/// semaphore the transport awaits on.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    table: Mutex<Table>,
    handshakes: Arc<Semaphore>,
}

/// Held while a connection from one source is in progress; releases its slots on drop.
#[derive(Debug)]
pub struct SourcePermit {
    guard: Arc<Guard>,
    src: IpAddr,
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut t = self.guard.table.lock().unwrap_or_else(|e| e.into_inner());
        t.in_progress = t.in_progress.saturating_sub(1);
        if let Some(s) = t.sources.get_mut(&self.src) {
            s.active = s.active.saturating_sub(1);
        }
    }
}

impl Guard {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Guard {
            handshakes: Arc::new(Semaphore::new(limits.handshakes.max(1))),
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// May a new connection from `src` start now? On `Ok`, hold the permit until its handshake (and, for
    /// an unauthenticated join, the join) is over.
    pub fn begin(self: &Arc<Self>, src: IpAddr, now: Instant) -> Result<SourcePermit, Refusal> {
        let l = &self.limits;
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.in_progress >= l.queued {
            return Err(Refusal::Overloaded);
        }
        if !t.sources.contains_key(&src) && t.sources.len() >= l.sources {
            // Forget sources with nothing in progress and a full bucket: they are indistinguishable from new.
            let full = l.burst / l.rate_per_s.max(f64::MIN_POSITIVE);
            t.sources
                .retain(|_, s| s.active > 0 || now.saturating_duration_since(s.last).as_secs_f64() < full);
            if t.sources.len() >= l.sources {
                return Err(Refusal::Overloaded);
            }
        }
        let s = t.sources.entry(src).or_insert(Source {
            active: 0,
            tokens: l.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * l.rate_per_s).min(l.burst);
        s.last = now;
        if s.active >= l.per_source {
            return Err(Refusal::SourceBusy);
        }
        if s.tokens < 1.0 {
            return Err(Refusal::SourceRate);
        }
        s.tokens -= 1.0;
        s.active += 1;
        t.in_progress += 1;
        Ok(SourcePermit {
            guard: Arc::clone(self),
            src,
        })
    }

    /// Wait (queued, FIFO) for one of the [`Limits::handshakes`] handshake slots.
    pub async fn handshake_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.handshakes).acquire_owned().await.ok()
    }

    /// Sources currently tracked (for tests).
    pub fn tracked_sources(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// `overlayctl stats` shows the dial counters under `quic` with these names (README, "The QUIC
    /// port"); a failed dial counts as a dial and a failure, and its time counts too.
    #[test]
    fn dial_counters_are_exported() {
        let s = QuicStats::default();
        s.count_dial(None, Duration::from_millis(30));
        s.count_dial(None, Duration::from_millis(10));
        s.count_backoff_drop();
        s.count_dial_avoided();
        s.count_dial_crossed();
        s.count_refused_crossing();
        let v = serde_json::to_value(s.snapshot()).unwrap();
        assert_eq!(v["dials"], 2);
        assert_eq!(v["dial_failures"], 2);
        assert_eq!(v["dial_ms_total"], 40);
        assert_eq!(v["dial_ms_max"], 30);
        assert_eq!(v["dial_lost_packets"], 0);
        assert_eq!(v["sends_dropped_backoff"], 1);
        assert_eq!(v["dials_avoided"], 1);
        assert_eq!(v["dials_crossed"], 1);
        assert_eq!(v["refused_crossing"], 1);
    }

    #[test]
    fn per_source_cap_and_release() {
        let g = Guard::new(Limits::default());
        let now = Instant::now();
        let permits: Vec<_> = (0..8).map(|_| g.begin(ip(9), now).unwrap()).collect();
        assert_eq!(g.begin(ip(9), now).unwrap_err(), Refusal::SourceBusy);
        // Another source is unaffected by the flood of the first.
        let other = g.begin(ip(1), now).unwrap();
        drop(permits);
        assert!(
            g.begin(ip(9), now).is_ok(),
            "slots come back when connections end"
        );
        drop(other);
    }

    #[test]
    fn per_source_rate() {
        let g = Guard::new(Limits {
            per_source: 1000,
            ..Limits::default()
        });
        let t0 = Instant::now();
        for _ in 0..64 {
            drop(g.begin(ip(9), t0).unwrap());
        }
        assert_eq!(g.begin(ip(9), t0).unwrap_err(), Refusal::SourceRate);
        // 32/s: after 100 ms about 3 more.
        let t1 = t0 + Duration::from_millis(100);
        let ok = (0..10).filter(|_| g.begin(ip(9), t1).map(drop).is_ok()).count();
        assert_eq!(ok, 3);
        // 32 different sources joining at once all get in.
        let all: Vec<_> = (101..=132).map(|n| g.begin(ip(n), t1)).collect();
        assert!(all.iter().all(Result::is_ok));
    }

    #[test]
    fn totals_and_source_table_are_bounded() {
        let g = Guard::new(Limits {
            queued: 4,
            sources: 3,
            ..Limits::default()
        });
        let now = Instant::now();
        let held: Vec<_> = (1..=3).map(|n| g.begin(ip(n), now).unwrap()).collect();
        assert_eq!(
            g.begin(ip(4), now).unwrap_err(),
            Refusal::Overloaded,
            "source table full"
        );
        let extra = g.begin(ip(1), now).unwrap();
        assert_eq!(
            g.begin(ip(2), now).unwrap_err(),
            Refusal::Overloaded,
            "total in progress"
        );
        drop(extra);
        drop(held);
        // Idle sources with a refilled bucket are forgotten to make room.
        let later = now + Duration::from_secs(10);
        assert!(g.begin(ip(4), later).is_ok());
        assert!(g.tracked_sources() <= 3);
    }

    #[tokio::test]
    async fn handshake_slots_queue_rather_than_refuse() {
        let g = Guard::new(Limits {
            handshakes: 2,
            ..Limits::default()
        });
        let a = g.handshake_slot().await.unwrap();
        let _b = g.handshake_slot().await.unwrap();
        let g2 = Arc::clone(&g);
        let waiter = tokio::spawn(async move { g2.handshake_slot().await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "third handshake waits");
        drop(a);
        assert!(waiter.await.unwrap(), "and proceeds once a slot frees");
    }
}
