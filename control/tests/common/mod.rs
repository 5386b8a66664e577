//! Set-up shared by the simulator tests (`control/tests/sim_*.rs`): clusters started with MACs and
//! run until they converge, protocol timings that keep SWIM (and anti-entropy) quiet, and what a node
//! reports. Each test crate uses a different part of it (what `dead_code` allows for items).
#![allow(dead_code)]

use std::time::Duration;

use control::sim::{mac, Sim, SimConfig};
use control::{ControlConfig, ControlNode, ControlStats, MemberInfo};

/// `n` nodes of `cfg`; node `i` reports the MACs `mac(i, 1)` to `mac(i, macs)` right after the start.
pub fn with_macs(n: usize, cfg: SimConfig, macs: u8) -> Sim {
    let mut sim = Sim::new(n, cfg);
    for i in 0..n {
        sim.set_macs(i, (1..=macs).map(|k| mac(i, k)).collect());
    }
    sim
}

/// Run until every membership view and every FDB has converged (checked every `tick`, for at most
/// `limit`): the virtual time it took, or None on timeout.
pub fn converge(sim: &mut Sim, limit: Duration, tick: Duration) -> Option<Duration> {
    sim.run_until(limit, tick, |s| s.membership_converged() && s.fdb_converged())
}

/// Every SWIM period at a minute: in the first seconds foca sends nothing but join announces and
/// their answers (see `foca::Foca::become_connected`: periodic timers start one period late).
pub fn swim_silenced() -> ControlConfig {
    let minute = Duration::from_secs(60);
    ControlConfig {
        probe_period: minute,
        probe_rtt: Duration::from_secs(1),
        gossip_interval: minute,
        announce_interval: minute,
        announce_down_interval: minute,
        ..ControlConfig::default()
    }
}

/// [`swim_silenced`] and anti-entropy at a minute too: no anti-entropy round repairs anything in the
/// first seconds either.
pub fn quiet() -> ControlConfig {
    ControlConfig {
        anti_entropy_interval: Duration::from_secs(60),
        ..swim_silenced()
    }
}

/// Node `i`'s state machine (panics if it is not running).
pub fn node(sim: &Sim, i: usize) -> &ControlNode {
    sim.nodes[i].node.as_ref().expect("running")
}

/// Node `i`'s counters (it must be running).
pub fn stats(sim: &Sim, i: usize) -> ControlStats {
    node(sim, i).stats()
}

/// Node `i`'s member list (panics if it is not running).
pub fn members(sim: &Sim, i: usize) -> Vec<MemberInfo> {
    node(sim, i).members()
}

/// No running node's FDB holds any of node `owner`'s MACs.
pub fn holds_none_of(sim: &Sim, owner: usize) -> bool {
    let macs = &sim.nodes[owner].macs;
    sim.running()
        .all(|(i, _)| macs.iter().all(|m| !sim.nodes[i].fdb.contains_key(m)))
}
