//! A full partition that heals after every node was declared down by the other side (simulator,
//! virtual time). SWIM cannot refute a death, so at the heal every node renews its identity (the
//! sides' announces to their down members are answered with TurnUndead). When the renewals of one
//! side happen within a few milliseconds of each other, each one's renewal gossip is addressed to an
//! identity its receiver has just given up and is dropped, and foca (reset to Disconnected by the
//! renewal) never sent another packet: the cluster never reconverged (docs/RELIABILITY.md). A node
//! whose foca is disconnected now re-announces itself to the addresses it holds
//! (`control/src/node/membership.rs`, `Reconnect`).
//!
//! The sweep runs half its seeds on links without jitter: every node formed at the same instant and
//! its periodic timers are phase-locked with the others', which makes the renewals simultaneous (on
//! `66f963c`, before the fix, most of those seeds never reconverged); the other half with the
//! default jitter.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{converge, with_macs};
use control::sim::{mac, Sim, SimConfig};
use control::{ControlConfig, MemberState};

const TICK: Duration = Duration::from_millis(10);
const N: usize = 6;

/// Every running node holds every other running node alive at its current (generation, renewal),
/// and nothing else alive.
fn latest_identities_everywhere(s: &Sim) -> bool {
    let live: BTreeMap<String, (u64, u32)> = s
        .running()
        .map(|(_, c)| {
            let id = c.identity();
            (id.id.to_string(), (id.generation, id.renewal))
        })
        .collect();
    s.running().all(|(_, c)| {
        let alive: BTreeMap<String, (u64, u32)> = c
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| (m.id, (m.generation, m.renewal)))
            .collect();
        alive == live
    })
}

/// What each node holds, for a failure message.
fn dump(s: &Sim) -> String {
    let mut out = String::new();
    for (i, c) in s.running() {
        out.push_str(&format!("node {i} ({} active):", c.active_members()));
        for m in c.members() {
            out.push_str(&format!(" {}.r{}={:?}", &m.id[12..], m.renewal, m.state));
        }
        out.push('\n');
    }
    out
}

/// Form, cut into `sides` until each side holds the other dead, learn one new MAC per side, heal.
/// Returns the time from the heal to convergence, or what each node held when it gave up.
fn partition_and_heal(seed: u64, jitter: Duration, sides: &[Vec<usize>]) -> Result<Duration, String> {
    let mut sim = with_macs(
        N,
        SimConfig {
            seed,
            jitter,
            admitters: 2,
            control: ControlConfig::default(),
            ..SimConfig::default()
        },
        1,
    );
    converge(&mut sim, Duration::from_secs(10), TICK).ok_or("the cluster did not form")?;
    sim.run_for(Duration::from_secs(2));
    sim.partition(sides);
    let side_of = |i: usize| sides.iter().position(|g| g.contains(&i)).unwrap();
    sim.run_until(Duration::from_secs(15), TICK, |s| {
        s.running().all(|(i, c)| {
            c.members().iter().all(|m| {
                let j = s.nodes.iter().position(|n| n.id.to_string() == m.id).unwrap();
                let want = if side_of(i) == side_of(j) {
                    MemberState::Alive
                } else {
                    MemberState::Dead
                };
                m.state == want
            })
        })
    })
    .ok_or_else(|| format!("the sides never held each other dead\n{}", dump(&sim)))?;
    // One MAC learnt on each side while it is cut off.
    for g in sides {
        let i = g[0];
        sim.set_macs(i, vec![mac(i, 1), mac(i, 2)]);
    }
    sim.run_for(Duration::from_secs(1));
    sim.heal();
    let healed = sim
        .run_until(Duration::from_secs(30), TICK, |s| {
            latest_identities_everywhere(s) && s.fdb_converged() && s.digests_equal()
        })
        .ok_or_else(|| format!("no reconvergence within 30 s of the heal\n{}", dump(&sim)))?;
    // What this test is about: every node was declared down and renewed.
    let not_renewed: Vec<usize> = sim
        .running()
        .filter(|(_, c)| c.identity().renewal == 0)
        .map(|(i, _)| i)
        .collect();
    if !not_renewed.is_empty() {
        return Err(format!("nodes {not_renewed:?} did not renew\n{}", dump(&sim)));
    }
    if !sim.errors.is_empty() {
        return Err(format!("input errors: {:?}", sim.errors));
    }
    Ok(healed)
}

/// 48 seeds of 6 nodes cut 3/3, half without link jitter: every node renews at the heal, and every
/// node ends holding every other alive at its renewed identity, with equal FDBs and digests.
#[test]
fn every_node_renewed_after_a_full_partition_and_the_cluster_reconverges() {
    let mut failed = Vec::new();
    let mut worst = Duration::ZERO;
    for seed in 100..148u64 {
        let jitter = if seed % 2 == 0 {
            Duration::ZERO
        } else {
            SimConfig::default().jitter
        };
        match partition_and_heal(seed, jitter, &[vec![0, 1, 2], vec![3, 4, 5]]) {
            Ok(t) => worst = worst.max(t),
            Err(e) => failed.push(format!("seed {seed} (jitter {jitter:?}): {e}")),
        }
    }
    println!("worst reconvergence after the heal: {worst:?}");
    assert!(
        failed.is_empty(),
        "{} of 48 seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The shape of `sim_networks.rs::partitioned_admitters_conflict_resolves_deterministically` (2 and 4
/// nodes, an admitter on each side), over seeds that include those that never healed before the fix.
#[test]
fn uneven_partition_reconverges_after_every_node_renewed() {
    let mut failed = Vec::new();
    for seed in [28u64, 43, 47, 73, 77, 88] {
        for jitter in [Duration::ZERO, SimConfig::default().jitter] {
            if let Err(e) = partition_and_heal(seed, jitter, &[vec![0, 2], vec![1, 3, 4, 5]]) {
                failed.push(format!("seed {seed} (jitter {jitter:?}): {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
