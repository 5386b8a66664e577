//! 32-node simulator scenarios (virtual clock, in-memory transport, seeded loss): membership and FDB
//! convergence, SIGKILL withdrawal, restart with a new generation, MAC move, partition + heal, and no
//! false deaths under 20 % loss. Times printed are virtual; assertions use the bounds only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

mod common;

use std::time::Duration;

use common::{converge, holds_none_of, with_macs};
use control::sim::{mac, Sim, SimConfig};

const N: usize = 32;
const TICK: Duration = Duration::from_millis(10);

fn converged_cluster(seed: u64) -> Sim {
    let mut sim = with_macs(
        N,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
        2,
    );
    let t = converge(&mut sim, Duration::from_secs(60), TICK);
    let t = t.expect("32 nodes converge (membership + FDB) within 60 s virtual");
    println!("seed {seed}: membership+FDB convergence in {:?} virtual", t);
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
    sim
}

#[test]
fn full_membership_and_fdb_convergence() {
    let sim = converged_cluster(1);
    assert!(sim.digests_equal());
    assert!(
        sim.deaths.is_empty(),
        "no deaths during bootstrap: {:?}",
        sim.deaths
    );
}

#[test]
fn sigkill_withdraws_within_3s_and_restart_new_generation_wins() {
    let mut sim = converged_cluster(2);
    let victim = 5;
    sim.kill(victim);
    let t = sim
        .run_until(Duration::from_secs(30), TICK, |s| holds_none_of(s, victim))
        .expect("withdrawn");
    println!("SIGKILL: entries of node {victim} withdrawn everywhere after {t:?} virtual");
    assert!(
        t <= Duration::from_secs(3),
        "issue bound: withdrawn within 3 s, took {t:?}"
    );
    // Everyone reports it dead (not left).
    let id = sim.nodes[victim].id.to_string();
    sim.run_for(Duration::from_millis(500));
    for (_, c) in sim.running() {
        let m = c
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .expect("still listed");
        assert_eq!(m.state, control::MemberState::Dead);
    }
    // No one else died along the way.
    assert!(
        sim.deaths.iter().all(|d| d.1 == sim.nodes[victim].id),
        "{:?}",
        sim.deaths
    );

    // Restart: a new generation joins and wins everywhere.
    sim.restart(victim);
    assert_eq!(sim.nodes[victim].generation, 2);
    let t = converge(&mut sim, Duration::from_secs(30), TICK).expect("restarted node re-converges");
    println!("restart: generation 2 of node {victim} accepted everywhere after {t:?} virtual");
    for (_, c) in sim.running() {
        let m = c.members().into_iter().find(|m| m.id == id).expect("listed");
        assert_eq!((m.state, m.generation), (control::MemberState::Alive, 2));
    }

    // A stale anti-entropy dump about generation 1 is ignored.
    let ghost = mac(99, 9);
    let stale = control::messages::SyncMessage::States {
        owners: vec![control::messages::OwnerDump {
            owner: sim.nodes[victim].id,
            generation: 1,
            // Genuinely signed by the victim for its old generation: still ignored.
            entries: vec![control::messages::FdbEntry::sign(
                &sim.nodes[victim].signer,
                sim.nodes[victim].id,
                1,
                (control::sim::SIM_VNI, ghost.0),
                vec![],
                1,
                1,
                true,
            )],
        }],
    };
    let bytes = control::messages::encode_sync(&stale).unwrap();
    sim.inject(victim, 0, bytes);
    sim.run_for(Duration::from_secs(3));
    assert!(sim.running().all(|(i, _)| !sim.nodes[i].fdb.contains_key(&ghost)));
    assert!(sim.fdb_converged() && sim.digests_equal());
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

#[test]
fn sigterm_leave_withdraws_within_1s() {
    let mut sim = converged_cluster(3);
    let who = 7;
    sim.terminate(who);
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| holds_none_of(s, who))
        .expect("withdrawn");
    println!("SIGTERM: entries of node {who} withdrawn everywhere after {t:?} virtual");
    assert!(
        t <= Duration::from_secs(1),
        "issue bound: gone within 1 s, took {t:?}"
    );
    let id = sim.nodes[who].id.to_string();
    for (_, c) in sim.running() {
        let m = c.members().into_iter().find(|m| m.id == id).expect("listed");
        assert_eq!(m.state, control::MemberState::Left);
    }
}

#[test]
fn mac_move_points_everyone_to_new_owner() {
    let mut sim = converged_cluster(4);
    let moving = mac(3, 1);
    // VM migration: the new host sees the MAC before the old one stops seeing it.
    let mut b = sim.nodes[10].macs.clone();
    b.push(moving);
    sim.set_macs(10, b);
    sim.run_for(Duration::from_millis(50));
    sim.set_macs(3, vec![mac(3, 2)]);
    let vtep10 = sim.nodes[10].vtep;
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| {
            s.fdb_converged()
                && s.running()
                    .all(|(i, _)| i == 10 || s.nodes[i].fdb.get(&moving) == Some(&vtep10))
        })
        .expect("move applied everywhere");
    println!("MAC move: applied everywhere after {t:?} virtual");
    let resolved = sim.nodes[0].node.as_ref().unwrap().resolved_fdb();
    assert_eq!(
        resolved.get(&(control::sim::sim_vni(), moving)),
        Some(&sim.nodes[10].id)
    );
    // And back again, the other way round (withdraw first, then add elsewhere).
    sim.set_macs(10, vec![mac(10, 1), mac(10, 2)]);
    sim.set_macs(3, vec![moving, mac(3, 2)]);
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| s.fdb_converged())
        .expect("move back");
    println!("MAC move back: applied everywhere after {t:?} virtual");
    // Node 10's withdrawal changes no FDB (node 3's new claim wins anyway) and may arrive a batch
    // window later (adverts are batched): the tables end up identical all the same.
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| s.digests_equal())
        .expect("digests equal");
    println!("MAC move back: all digests equal {t:?} later");
}

#[test]
fn partition_and_heal_converge_to_equal_digests() {
    let mut sim = converged_cluster(5);
    let left: Vec<usize> = (0..N / 2).collect();
    let right: Vec<usize> = (N / 2..N).collect();
    sim.partition(&[left.clone(), right.clone()]);
    // Each half declares the other dead and withdraws its MACs.
    let t = sim
        .run_until(Duration::from_secs(30), TICK, |s| {
            left.iter().all(|&i| {
                right
                    .iter()
                    .all(|&j| s.nodes[j].macs.iter().all(|m| !s.nodes[i].fdb.contains_key(m)))
            })
        })
        .expect("halves withdraw each other");
    println!("partition: each half withdrew the other after {t:?} virtual");
    // Changes on both sides while split.
    sim.set_macs(2, vec![mac(2, 1), mac(2, 2), mac(2, 3)]);
    sim.set_macs(20, vec![mac(20, 1)]);
    sim.run_for(Duration::from_secs(2));
    sim.heal();
    let t = sim
        .run_until(Duration::from_secs(120), TICK, |s| {
            s.membership_converged() && s.fdb_converged() && s.digests_equal()
        })
        .expect("healed partition converges");
    println!("heal: membership + FDB converged, all digests equal after {t:?} virtual");
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

#[test]
fn twenty_percent_loss_no_false_deaths() {
    let mut sim = converged_cluster(6);
    sim.set_loss(0.20);
    sim.run_for(Duration::from_secs(10));
    // FDB changes still propagate under loss (gossip + anti-entropy).
    for i in 0..N {
        sim.set_macs(i, vec![mac(i, 1), mac(i, 3)]);
    }
    let t = sim
        .run_until(Duration::from_secs(60), TICK, |s| s.fdb_converged())
        .expect("converges under loss");
    println!("20% loss: FDB change converged after {t:?} virtual");
    sim.run_for(Duration::from_secs(50));
    println!("20% loss: {} sent, {} dropped", sim.sent, sim.dropped);
    assert!(
        sim.deaths.is_empty(),
        "false deaths under 20% loss: {:?}",
        sim.deaths
    );
    // Suspicions come and go under loss; nobody is dead and everyone is still an active member.
    for (_, c) in sim.running() {
        assert_eq!(c.active_members(), N - 1);
    }
}

#[test]
fn deterministic_replay() {
    let run = |seed| {
        let mut sim = converged_cluster(seed);
        sim.set_loss(0.1);
        sim.kill(9);
        sim.run_for(Duration::from_secs(5));
        (
            sim.sent,
            sim.dropped,
            sim.elapsed(),
            sim.nodes[0].node.as_ref().unwrap().fdb_digest(),
        )
    };
    assert_eq!(run(11), run(11));
}

/// Timing survey across seeds (run with `--ignored --nocapture`): worst SIGKILL withdrawal time and
/// false deaths under 20 % loss. Not part of the default run; used to choose the default timings.
/// Knobs via env: PROBE_MS RTT_MS SUSP_MS IND MAXTX GOSSIP_MS FANOUT SEEDS.
#[test]
#[ignore]
fn survey_timings() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let mut c = control::ControlConfig::default();
    c.probe_period = Duration::from_millis(env("PROBE_MS", c.probe_period.as_millis() as u64));
    c.probe_rtt = Duration::from_millis(env("RTT_MS", c.probe_rtt.as_millis() as u64));
    c.suspect_to_down_after =
        Duration::from_millis(env("SUSP_MS", c.suspect_to_down_after.as_millis() as u64));
    c.num_indirect_probes = env("IND", c.num_indirect_probes as u64) as usize;
    c.max_transmissions = env("MAXTX", c.max_transmissions as u64) as u8;
    c.gossip_interval = Duration::from_millis(env("GOSSIP_MS", c.gossip_interval.as_millis() as u64));
    c.gossip_fanout = env("FANOUT", c.gossip_fanout as u64) as usize;
    let seeds = env("SEEDS", 10);
    let mut worst = Duration::ZERO;
    let mut false_deaths = 0;
    let mut runs_with_deaths = 0;
    for seed in 100..100 + seeds {
        let cfg = SimConfig {
            seed,
            control: c.clone(),
            ..SimConfig::default()
        };
        let mut sim = with_macs(N, cfg.clone(), 1);
        converge(&mut sim, Duration::from_secs(60), TICK).unwrap();
        let victim = (seed as usize * 7) % N;
        sim.kill(victim);
        let t = sim
            .run_until(Duration::from_secs(30), TICK, |s| holds_none_of(s, victim))
            .unwrap();
        worst = worst.max(t);
        let mut sim = Sim::new(N, cfg);
        sim.run_until(Duration::from_secs(60), TICK, |s| s.membership_converged())
            .unwrap();
        sim.set_loss(0.2);
        sim.run_for(Duration::from_secs(30));
        false_deaths += sim.deaths.len();
        runs_with_deaths += usize::from(!sim.deaths.is_empty());
        println!(
            "seed {seed}: kill withdrawn in {t:?}; deaths under loss {}",
            sim.deaths.len()
        );
    }
    println!("worst SIGKILL withdrawal {worst:?}; false deaths {false_deaths} in {runs_with_deaths} runs");
}

/// systemd-style restart: the new generation starts before anyone noticed the old one died. The new
/// generation supersedes the old everywhere and a MAC only the old generation had is withdrawn.
#[test]
fn quick_restart_new_generation_supersedes_old() {
    let mut sim = converged_cluster(7);
    let who = 12;
    let only_old = mac(who, 2);
    sim.nodes[who].macs = vec![mac(who, 1)]; // the new process will only see this one
    sim.restart(who);
    let id = sim.nodes[who].id.to_string();
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| {
            s.membership_converged()
                && s.fdb_converged()
                && s.running().all(|(i, _)| !s.nodes[i].fdb.contains_key(&only_old))
        })
        .expect("new generation wins");
    println!("quick restart: generation 2 everywhere, old-only MAC withdrawn after {t:?} virtual");
    for (_, c) in sim.running() {
        let row = c.members().into_iter().find(|m| m.id == id).unwrap();
        assert_eq!((row.state, row.generation), (control::MemberState::Alive, 2));
    }
    assert!(sim.digests_equal());
    // The old generation was superseded, not declared dead.
    assert!(sim.deaths.is_empty(), "{:?}", sim.deaths);
}

/// A SIGKILL under 20 % loss is still detected and withdrawn (bound relaxed: loss slows probing).
#[test]
fn sigkill_under_loss_is_withdrawn() {
    let mut sim = converged_cluster(8);
    sim.set_loss(0.2);
    sim.kill(20);
    let t = sim
        .run_until(Duration::from_secs(30), TICK, |s| holds_none_of(s, 20))
        .expect("withdrawn under loss");
    println!("SIGKILL under 20% loss: withdrawn everywhere after {t:?} virtual");
    assert!(
        sim.deaths.iter().all(|d| d.1 == sim.nodes[20].id),
        "only the victim died: {:?}",
        sim.deaths
    );
}

/// Bootstrap itself under 20 % loss: joins are retried, membership and FDB still converge, nobody dies.
#[test]
fn bootstrap_under_loss_converges() {
    let mut sim = with_macs(
        N,
        SimConfig {
            seed: 9,
            loss: 0.2,
            ..SimConfig::default()
        },
        1,
    );
    let t = converge(&mut sim, Duration::from_secs(60), TICK).expect("converges under loss");
    println!("bootstrap under 20% loss: membership + FDB converged after {t:?} virtual");
    assert!(sim.deaths.is_empty(), "{:?}", sim.deaths);
}

/// SIGTERM under 20 % loss: the direct leave notices that are lost are covered by foca's gossip of the
/// departure, so withdrawal still completes everywhere quickly.
#[test]
fn sigterm_under_loss_withdraws() {
    let mut sim = converged_cluster(10);
    sim.set_loss(0.2);
    sim.terminate(25);
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| holds_none_of(s, 25))
        .expect("withdrawn");
    println!("SIGTERM under 20% loss: withdrawn everywhere after {t:?} virtual");
    assert!(t <= Duration::from_secs(3), "took {t:?}");
    // The leave notice also rides on gossip, so every member ends up reporting "left", not "dead".
    let id = sim.nodes[25].id.to_string();
    let t = sim
        .run_until(Duration::from_secs(10), TICK, |s| {
            s.running().all(|(_, c)| {
                c.members()
                    .iter()
                    .any(|m| m.id == id && m.state == control::MemberState::Left)
            })
        })
        .expect("everyone labels it left");
    println!("SIGTERM under 20% loss: all members report \"left\" {t:?} later");
}
