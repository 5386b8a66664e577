//! Convergence without waiting for SWIM gossip (simulator, virtual time, deterministic):
//!
//! - while a cluster forms, a joiner's MAC reaches the members that have not heard of the joiner
//!   through SWIM: with every SWIM period (probes, gossip, announces) set to a minute, the only SWIM
//!   traffic of the first seconds is the join (Announce, and the member list it is answered with), so
//!   the members that joined before a joiner can learn of it only from the member that answered its
//!   join (an introduction, `control/src/node/relay.rs`; at this size the joiner sends them no Hello)
//!   or, in a cluster too large for one join answer, from its Hello (its signed identity sent straight
//!   to them, `control/src/node/direct.rs`; see `control/tests/sim_formation.rs`);
//! - a Hello that does not verify (another CA, an identity sent on another node's behalf, a revoked
//!   node) makes no one a member, and table pieces that arrived before their owner was known are
//!   merged only once it is, each entry checked against the owner's key;
//! - a node that declares a SIGKILLed member down tells every member directly: all of them drop it
//!   within a few message latencies of the first, not after gossip rounds.
//!
//! Times printed are virtual.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

mod common;

use std::time::Duration;

use common::{converge, members, swim_silenced, with_macs};
use control::attest::Attestation;
use control::messages::{encode_sync, FdbEntry, OwnerDump, SyncMessage};
use control::sim::{mac, new_signer, sim_vni, Sim, SimConfig};
use control::{ControlConfig, MemberState, NodeId, NodeIdentity};

const TICK: Duration = Duration::from_millis(5);

#[test]
fn joiner_macs_reach_members_that_have_not_heard_of_it_through_swim() {
    const N: usize = 16;
    let mut sim = with_macs(
        N,
        SimConfig {
            seed: 3,
            control: swim_silenced(),
            ..SimConfig::default()
        },
        1,
    );
    let t = converge(&mut sim, Duration::from_secs(5), TICK)
        .expect("every node knows every member and every MAC long before the first SWIM round");
    let hellos: Vec<u64> = sim.running().map(|(_, c)| c.stats().hellos_accepted).collect();
    let intros: Vec<u64> = sim
        .running()
        .map(|(_, c)| c.stats().introductions_accepted)
        .collect();
    println!("N = {N}, SWIM periods 60 s: formed, every MAC everywhere, after {t:?}; Hellos and introductions that made a member known, per node: {hellos:?} {intros:?}");
    // Node 0 admitted everyone (their announces); the others learnt of the joiners that came after
    // them only through node 0's introductions of them: all but node 0 and the last joiner took some.
    // One join answer lists all 16, so no joiner needed a Hello.
    assert!(t < Duration::from_millis(500), "took {t:?}");
    let introduced = intros.iter().filter(|&&h| h > 0).count();
    assert!(introduced >= N - 2, "{intros:?}");
    assert!(hellos.iter().all(|&h| h == 0), "{hellos:?}");
    assert!(sim.deaths.is_empty(), "{:?}", sim.deaths);
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// A formed 4-node cluster (default timings).
fn small_cluster(seed: u64) -> Sim {
    let mut sim = with_macs(
        4,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
        1,
    );
    converge(&mut sim, Duration::from_secs(10), TICK).expect("converged");
    sim
}

fn ids(sim: &Sim, i: usize) -> Vec<(String, MemberState)> {
    members(sim, i).into_iter().map(|m| (m.id, m.state)).collect()
}

#[test]
fn hellos_that_do_not_verify_make_no_member() {
    let mut sim = small_cluster(5);
    let node0 = |s: &Sim| s.nodes[0].node.as_ref().unwrap().stats();
    let before = node0(&sim);
    let hello = |identity: NodeIdentity| encode_sync(&SyncMessage::Hello { identity }).unwrap();
    // 1. Attested by another CA, from its own address (node 1's).
    let (foreign_ca, key) = (new_signer(), new_signer());
    let addr = sim.nodes[1].addr;
    let att = Attestation::issue(
        &foreign_ca,
        NodeId(0x9999),
        vec![sim.nodes[1].vtep, addr.ip()],
        false,
        key.public_key(),
    )
    .unwrap();
    let forged = NodeIdentity::signed(addr, sim.nodes[1].vtep, 99, att, &key).unwrap();
    sim.inject(1, 0, hello(forged));
    // 2. Node 2's valid identity, sent by node 1 (a Hello is only ever on one's own behalf).
    sim.inject(1, 0, hello(sim.identity_of(2)));
    // 3. Node 1's identity with a VTEP its attestation does not name.
    let mut wrong_vtep = sim.identity_of(1);
    wrong_vtep.vtep = "192.168.9.9".parse().unwrap();
    sim.inject(1, 0, hello(wrong_vtep));
    sim.run_for(Duration::from_millis(50));
    let after = node0(&sim);
    assert_eq!(
        after.identities_refused - before.identities_refused,
        2,
        "{after:?}"
    );
    assert_eq!(after.rejected - before.rejected, 1, "{after:?}");
    assert_eq!(after.hellos_accepted, before.hellos_accepted);
    assert!(ids(&sim, 0)
        .iter()
        .all(|(id, _)| id != &NodeId(0x9999).to_string()));
    assert_eq!(sim.nodes[0].node.as_ref().unwrap().active_members(), 3);

    // 4. A revoked node (killed, so it cannot refute) introducing itself again is refused.
    let victim = 3;
    let victim_id = sim.nodes[victim].id;
    let hello3 = hello(sim.identity_of(victim));
    sim.kill(victim);
    sim.revoke(0, victim_id).unwrap();
    sim.run_until(Duration::from_secs(5), TICK, |s| {
        s.running()
            .all(|(i, _)| !ids(s, i).iter().any(|(id, _)| id == &victim_id.to_string()))
    })
    .expect("revoked everywhere");
    for to in 0..3 {
        sim.inject(victim, to, hello3.clone());
    }
    sim.run_for(Duration::from_millis(50));
    for i in 0..3 {
        assert!(
            !ids(&sim, i).iter().any(|(id, _)| id == &victim_id.to_string()),
            "node {i}: {:?}",
            ids(&sim, i)
        );
        assert_eq!(sim.nodes[i].node.as_ref().unwrap().active_members(), 2);
        assert!(!sim.nodes[i].fdb.contains_key(&mac(victim, 1)));
    }
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// A table piece of an owner the receiver does not know yet is kept and merged when the owner's
/// Hello arrives; an entry in it that its owner did not sign is refused then.
#[test]
fn table_pieces_before_their_owner_are_merged_when_it_is_known_and_checked() {
    // SWIM silenced, and node 3's join announce cut by a partition: node 3 knows no one (it knocks
    // again on its next anti-entropy tick, at 1 s), so node 1 hears of it only through the Hello we
    // send below, after the pieces.
    let mut sim = Sim::new(
        4,
        SimConfig {
            seed: 9,
            control: swim_silenced(),
            ..SimConfig::default()
        },
    );
    sim.partition(&[vec![0, 1, 2], vec![3]]);
    sim.run_for(Duration::from_millis(200));
    sim.heal();
    assert_eq!(sim.nodes[1].node.as_ref().unwrap().active_members(), 2);
    // Node 3 (alone) signs two entries of its own table; one more is signed by node 2's key.
    let owner = sim.nodes[3].id;
    let generation = sim.nodes[3].generation;
    let sign = |sim: &Sim, by: usize, m: u8, seq: u64| {
        FdbEntry::sign(
            &sim.nodes[by].signer,
            owner,
            generation,
            (sim_vni().get(), mac(3, m).0),
            vec![],
            seq,
            0,
            true,
        )
    };
    let good = OwnerDump {
        owner,
        generation,
        entries: vec![sign(&sim, 3, 1, 1)],
    };
    let forged = OwnerDump {
        owner,
        generation,
        entries: vec![sign(&sim, 2, 9, 2)],
    };
    for d in [good, forged] {
        sim.inject(
            3,
            1,
            encode_sync(&SyncMessage::States { owners: vec![d] }).unwrap(),
        );
    }
    sim.run_for(Duration::from_millis(50));
    let node1 = |s: &Sim| s.nodes[1].node.as_ref().unwrap().stats();
    assert!(
        sim.nodes[1].fdb.is_empty(),
        "nothing merged before the owner is known"
    );
    let bad0 = node1(&sim).bad_signatures;
    sim.inject(
        3,
        1,
        encode_sync(&SyncMessage::Hello {
            identity: sim.identity_of(3),
        })
        .unwrap(),
    );
    sim.run_for(Duration::from_millis(50));
    assert_eq!(
        sim.nodes[1].fdb.get(&mac(3, 1)),
        Some(&sim.nodes[3].vtep),
        "merged once node 3 is known"
    );
    assert!(
        !sim.nodes[1].fdb.contains_key(&mac(3, 9)),
        "not signed by its owner"
    );
    assert_eq!(node1(&sim).bad_signatures - bad0, 1);
    assert_eq!(node1(&sim).hellos_accepted, 1);
    assert!(
        sim.elapsed() < Duration::from_secs(1),
        "before node 3 knocked again"
    );
}

/// Without loss, the first node to declare a SIGKILLed member down tells every member directly: the
/// others follow within a few message latencies, not gossip rounds. Down notices from a non-member,
/// about a member that is alive to the receiver's knowledge but sent by itself, or about the
/// receiver, change nothing.
#[test]
fn a_declared_death_reaches_every_member_in_one_message() {
    const N: usize = 16;
    let mut sim = with_macs(
        N,
        SimConfig {
            seed: 21,
            ..SimConfig::default()
        },
        1,
    );
    converge(&mut sim, Duration::from_secs(20), TICK).expect("converged");

    // Bogus notices first: about the receiver itself, and a node declaring itself down.
    let down = |identity: NodeIdentity| encode_sync(&SyncMessage::Down { identity }).unwrap();
    sim.inject(1, 0, down(sim.identity_of(0)));
    sim.inject(2, 0, down(sim.identity_of(2)));
    let rejected = sim.nodes[0].node.as_ref().unwrap().stats().rejected;
    sim.run_for(Duration::from_millis(50));
    assert!(sim.deaths.is_empty(), "{:?}", sim.deaths);
    assert_eq!(sim.nodes[0].node.as_ref().unwrap().stats().rejected - rejected, 2);

    let victim = N - 1;
    let vid = sim.nodes[victim].id;
    sim.kill(victim);
    let first = sim
        .run_until(Duration::from_secs(10), Duration::from_millis(1), |s| {
            s.deaths.iter().any(|d| d.1 == vid)
        })
        .expect("declared down");
    let rest = sim
        .run_until(Duration::from_secs(10), Duration::from_millis(1), |s| {
            s.running()
                .all(|(i, _)| s.deaths.iter().any(|d| d.0 == i && d.1 == vid))
        })
        .expect("down everywhere");
    let announced: u64 = sim.running().map(|(_, c)| c.stats().downs_announced).sum();
    println!("SIGKILL: first declared down after {first:?}, everywhere {rest:?} later ({announced} direct announcements)");
    assert!(announced >= 1);
    // Latency 2 ms + jitter < 3 ms, one message; gossip would take rounds of 200 ms.
    assert!(rest <= Duration::from_millis(10), "{rest:?}");
    assert!(sim
        .running()
        .all(|(i, _)| !sim.nodes[i].fdb.contains_key(&mac(victim, 1))));
    assert!(sim.deaths.iter().all(|d| d.1 == vid), "{:?}", sim.deaths);

    // A notice from a node that is no member (the dead one) is refused: node 1 stays alive at node 0.
    let rejected = sim.nodes[0].node.as_ref().unwrap().stats().rejected;
    sim.inject(victim, 0, down(sim.identity_of(1)));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.nodes[0].node.as_ref().unwrap().stats().rejected - rejected, 1);
    assert!(sim.deaths.iter().all(|d| d.1 == vid), "{:?}", sim.deaths);
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// Timing survey for the failure detector (run with `--ignored --nocapture`): per seed, the SIGKILL
/// withdrawal time at N nodes without loss, and false deaths over 30 s at 20 % loss. Env knobs:
/// NODES SEEDS PROBE_MS SUSP_MS SILENCE_MS LOSS_PCT.
#[test]
#[ignore]
fn survey_withdrawal() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let mut c = ControlConfig::default();
    let ms = |d: Duration| d.as_millis() as u64;
    c.probe_period = Duration::from_millis(env("PROBE_MS", ms(c.probe_period)));
    c.suspect_to_down_after = Duration::from_millis(env("SUSP_MS", ms(c.suspect_to_down_after)));
    c.suspect_silence = Duration::from_millis(env("SILENCE_MS", ms(c.suspect_silence)));
    let n = env("NODES", 32) as usize;
    let loss = env("LOSS_PCT", 20) as f64 / 100.0;
    let mut times = Vec::new();
    let mut deaths = 0;
    for seed in 100..100 + env("SEEDS", 10) {
        let cfg = SimConfig {
            seed,
            control: c.clone(),
            ..SimConfig::default()
        };
        let mut sim = with_macs(n, cfg.clone(), 1);
        converge(&mut sim, Duration::from_secs(60), TICK).unwrap();
        sim.run_for(Duration::from_secs(5));
        let victim = 1 + (seed as usize * 7) % (n - 1);
        sim.kill(victim);
        let t = sim
            .run_until(Duration::from_secs(30), TICK, |s| {
                s.running()
                    .all(|(i, _)| !s.nodes[i].fdb.contains_key(&mac(victim, 1)))
            })
            .unwrap();
        times.push(t);
        let mut sim = Sim::new(n, cfg);
        sim.run_until(Duration::from_secs(60), TICK, |s| s.membership_converged())
            .unwrap();
        sim.set_loss(loss);
        sim.run_for(Duration::from_secs(30));
        deaths += sim.deaths.len();
        println!(
            "seed {seed}: withdrawn in {t:?}; false deaths under loss {}",
            sim.deaths.len()
        );
    }
    times.sort();
    println!(
        "N = {n}: withdrawal p50 {:?} max {:?}; false deaths at {:.0}% loss: {deaths}",
        times[times.len() / 2],
        times[times.len() - 1],
        loss * 100.0
    );
}

/// A rogue member cannot grow another node's parked pieces without bound: a piece of an owner nobody
/// knows weighs its entries plus one, an empty one is not kept at all, and beyond the bound the oldest
/// pieces go (counted as `parked_dropped`).
#[test]
fn parked_pieces_of_unknown_owners_stay_bounded() {
    let mut sim = Sim::new(
        3,
        SimConfig {
            seed: 5,
            ..SimConfig::default()
        },
    );
    sim.run_until(Duration::from_secs(20), TICK, |s| s.membership_converged())
        .expect("formed");
    let dropped = |s: &Sim| s.nodes[1].node.as_ref().unwrap().stats().parked_dropped;
    // Node 2 (a member) sends pieces of made-up owners, 100 per message; parking happens before any
    // signature check (that is done at the merge), so one entry serves for all.
    let entry = FdbEntry::sign(
        &sim.nodes[2].signer,
        sim.nodes[2].id,
        1,
        (sim_vni().get(), mac(2, 7).0),
        vec![],
        1,
        0,
        true,
    );
    let send = |sim: &mut Sim, first: u64, pieces: u64, entries: usize| {
        for start in (first..first + pieces).step_by(100) {
            let owners = (start..(start + 100).min(first + pieces))
                .map(|o| OwnerDump {
                    owner: NodeId(0xdead_0000_0000 + o),
                    generation: 1,
                    entries: vec![entry.clone(); entries],
                })
                .collect();
            sim.inject(2, 1, encode_sync(&SyncMessage::States { owners }).unwrap());
        }
        sim.run_for(Duration::from_millis(20));
    };
    let d0 = dropped(&sim);
    send(&mut sim, 0, 1000, 0);
    assert_eq!(dropped(&sim) - d0, 1000, "empty pieces are not parked");
    // 3000 one-entry pieces weigh 2 each against a bound of 4096: at most 2048 stay.
    let d1 = dropped(&sim);
    send(&mut sim, 1000, 3000, 1);
    assert!(
        dropped(&sim) - d1 >= 3000 - 2048,
        "only {} of 3000 pieces dropped",
        dropped(&sim) - d1
    );
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}
