//! The scale scenario of the simulator ([`scale_run`]): formation of an N-node cluster, an idle window,
//! then new MACs in the formed cluster; convergence times and bytes/s per node (virtual time). Used by
//! `control/tests/sim_scale.rs` and `control/examples/converge.rs`.

use std::time::Duration;

use super::{mac, Sim, SimConfig};
use crate::MacAddr;

/// What [`scale_run`] measured (all times virtual).
#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub nodes: usize,
    /// From t = 0 (every node starts and joins node 0, each with one MAC) until every membership
    /// view and every FDB is complete.
    pub formed: Option<Duration>,
    /// Per MAC, during formation: from t = 0 until every other node's FDB holds it (sorted).
    pub formation_known: Vec<Duration>,
    /// MACs of the formation not yet held by every other node when it stopped (at its 120 s
    /// limit; 0 if the cluster formed).
    pub formation_unfinished: usize,
    /// Per MAC, in the formed cluster: from the MAC's appearance on its node until every other
    /// node's FDB holds it (sorted).
    pub change_known: Vec<Duration>,
    /// Per node, bytes sent per second over an idle window of the formed cluster (sorted).
    pub idle_bytes_per_s: Vec<f64>,
    /// Per node, bytes sent per second over the window in which MACs appeared (sorted).
    pub change_bytes_per_s: Vec<f64>,
    /// False deaths (every node stays up throughout).
    pub deaths: usize,
    /// Events the simulator processed (deliveries and timers), a measure of its own work.
    pub events: u64,
    /// Messages sent by all nodes.
    pub messages: u64,
    /// Sync (non-SWIM) messages sent by all nodes: what the gossip budget paces.
    pub sync_messages: u64,
    /// Gossip-budget (Pace) timers that fired: about one per message that had to wait, never more
    /// than the sync messages (a timer that re-armed itself once made them multiply).
    pub pace_timers: u64,
    /// Most table passes waiting for the gossip budget during formation, summed over all nodes
    /// (sampled every 100 ms): the backlog the budget works through while a cluster forms.
    pub peak_pending_tables: u64,
    /// Virtual time of that peak.
    pub peak_pending_at: Duration,
}

impl ScaleReport {
    /// Nearest-rank percentile of a sorted sample.
    pub fn pct<T: Copy>(v: &[T], p: f64) -> Option<T> {
        if v.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        Some(v[rank.min(v.len()) - 1])
    }
}

/// Tracks, for a set of (owner, MAC), when each is held by every other running node's FDB.
struct Spread {
    /// (owner, MAC, appeared at, next node to check).
    pending: Vec<(usize, MacAddr, Duration, usize)>,
    done: Vec<Duration>,
}

impl Spread {
    fn new() -> Self {
        Spread {
            pending: Vec::new(),
            done: Vec::new(),
        }
    }

    fn add(&mut self, owner: usize, mac: MacAddr, at: Duration) {
        self.pending.push((owner, mac, at, 0));
    }

    /// Check the pending MACs (resuming at the first node that lacked each).
    fn poll(&mut self, sim: &Sim) {
        let now = sim.elapsed();
        let n = sim.nodes.len();
        self.pending.retain_mut(|(owner, mac, at, next)| {
            while *next < n {
                let node = &sim.nodes[*next];
                if *next != *owner && node.node.is_some() && !node.fdb.contains_key(mac) {
                    return true;
                }
                *next += 1;
            }
            self.done.push(now - *at);
            false
        });
    }
}

/// Bytes per second each node sent since `before` (per-node counters), over `secs`, sorted.
fn rates(sim: &Sim, before: &[u64], secs: f64) -> Vec<f64> {
    let mut v: Vec<f64> = sim
        .nodes
        .iter()
        .zip(before)
        .map(|(n, b)| (n.sent_bytes - b) as f64 / secs)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The convergence and cost figures of an `n`-node cluster with `cfg`: formation (every node starts
/// at t = 0 with one MAC and joins node 0), then an idle window, then `changes` nodes (spread evenly)
/// each get a new MAC, one every 50 ms. Deterministic for a given `cfg.seed`.
pub fn scale_run(n: usize, changes: usize, cfg: SimConfig) -> ScaleReport {
    const TICK: Duration = Duration::from_millis(5);
    let mut sim = Sim::new(
        n,
        SimConfig {
            log_sync: false,
            ..cfg
        },
    );
    let mut spread = Spread::new();
    for i in 0..n {
        sim.set_macs(i, vec![mac(i, 1)]);
        spread.add(i, mac(i, 1), Duration::ZERO);
    }
    let limit = Duration::from_secs(120);
    let mut formed = None;
    let (mut peak_pending_tables, mut peak_pending_at) = (0, Duration::ZERO);
    let mut ticks: u64 = 0;
    while sim.elapsed() < limit {
        if ticks % 20 == 0 {
            let pending: u64 = sim.running().map(|(_, c)| c.stats().sync_pending).sum();
            if pending > peak_pending_tables {
                (peak_pending_tables, peak_pending_at) = (pending, sim.elapsed());
            }
        }
        ticks += 1;
        spread.poll(&sim);
        if spread.pending.is_empty() && sim.membership_converged() {
            formed = Some(sim.elapsed());
            break;
        }
        sim.run_for(TICK);
    }
    let mut formation_known = std::mem::take(&mut spread.done);
    formation_known.sort();
    // MACs of a formation that did not finish within the limit: counted, and not mixed into the
    // new MACs' figures below.
    let formation_unfinished = std::mem::take(&mut spread.pending).len();

    // Let the formation's gossip backlog and anti-entropy settle, then measure an idle window.
    sim.run_for(Duration::from_secs(10));
    let idle = Duration::from_secs(10);
    let before: Vec<u64> = sim.nodes.iter().map(|x| x.sent_bytes).collect();
    sim.run_for(idle);
    let idle_bytes_per_s = rates(&sim, &before, idle.as_secs_f64());

    // New MACs on `changes` nodes, 50 ms apart.
    let before: Vec<u64> = sim.nodes.iter().map(|x| x.sent_bytes).collect();
    let t0 = sim.elapsed();
    let step = n / changes.clamp(1, n);
    for k in 0..changes.min(n) {
        let i = (k * step + 1) % n;
        sim.set_macs(i, vec![mac(i, 1), mac(i, 2)]);
        spread.add(i, mac(i, 2), sim.elapsed());
        for _ in 0..10 {
            sim.run_for(TICK);
            spread.poll(&sim);
        }
    }
    while !spread.pending.is_empty() && sim.elapsed() - t0 < Duration::from_secs(60) {
        sim.run_for(TICK);
        spread.poll(&sim);
    }
    let window = (sim.elapsed() - t0).as_secs_f64();
    let change_bytes_per_s = rates(&sim, &before, window);
    let mut change_known = spread.done;
    change_known.sort();
    ScaleReport {
        nodes: n,
        formed,
        formation_known,
        formation_unfinished,
        change_known,
        idle_bytes_per_s,
        change_bytes_per_s,
        deaths: sim.deaths.len(),
        events: sim.events,
        messages: sim.sent,
        sync_messages: sim.nodes.iter().map(|x| x.sync_messages).sum(),
        pace_timers: sim.pace_timers,
        peak_pending_tables,
        peak_pending_at,
    }
}
