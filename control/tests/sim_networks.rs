//! Networks and IPAM in the deterministic simulator: cluster-wide network definitions (late joiners,
//! tombstones that survive anti-entropy, re-creation), block grants that never collide, release of a
//! dead holder's blocks after the grace, adverts with IP bindings and per-VNI flood sets, and forged
//! grants / definitions from a rogue member.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use control::catalog::{NetworkDef, NetworkError, NetworkRecord};
use control::ipam::BlockGrant;
use control::messages::{self, Broadcast, SyncMessage};
use control::sim::{mac, new_signer, swim_packet, vni, Message, Sim, SimConfig};
use control::{BlockOutcome, ControlConfig, ControlError, IpNet, NodeId};

const TICK: Duration = Duration::from_millis(10);

fn sim(n: usize, seed: u64) -> Sim {
    sim_with(n, seed, 1)
}

fn sim_with(n: usize, seed: u64, admitters: usize) -> Sim {
    let mut sim = Sim::new(
        n,
        SimConfig {
            seed,
            admitters,
            control: ControlConfig {
                block_grace: Duration::from_secs(5),
                ..ControlConfig::default()
            },
            ..SimConfig::default()
        },
    );
    sim.run_until(Duration::from_secs(30), TICK, |s| s.membership_converged())
        .expect("membership converges");
    sim
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn def(name: &str, vni: u32, subnet: &str, block: Option<u8>) -> NetworkDef {
    NetworkDef::new(name, vni, net(subnet), None, false, block).unwrap()
}

/// Every running node reports exactly `want` as its networks.
fn all_have(s: &Sim, want: &BTreeMap<String, NetworkDef>) -> bool {
    s.running()
        .all(|(i, c)| s.nodes[i].networks == *want && c.networks().iter().map(|n| &n.def).eq(want.values()))
}

fn catalogs_equal(s: &Sim) -> bool {
    let d: BTreeSet<u64> = s.running().map(|(_, c)| c.catalog_digest()).collect();
    d.len() == 1
}

#[test]
fn network_definitions_reach_everyone_and_tombstones_stick() {
    let mut sim = sim(8, 31);
    let late = 7;
    sim.kill(late);
    let blue = def("blue", 100, "10.20.0.0/16", None);
    sim.on(3, |n, now| n.create_network(now, blue.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("blue".to_string(), blue.clone())].into();
    let t = sim
        .run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want))
        .expect("definition reaches every running node");
    println!("network create: everywhere after {t:?} virtual");
    assert!(t < Duration::from_secs(2), "{t:?}");

    // Same name other parameters, or another name on the same VNI: typed errors. Identical: no-op.
    let mut other = blue.clone();
    other.mtu = Some(1400);
    assert!(matches!(
        sim.on(5, |n, now| n.create_network(now, other.clone())),
        Err(ControlError::Network(NetworkError::NameExists { .. }))
    ));
    let clash = def("red", 100, "10.30.0.0/16", None);
    assert!(matches!(
        sim.on(5, |n, now| n.create_network(now, clash.clone())),
        Err(ControlError::Network(NetworkError::VniInUse { vni: 100, .. }))
    ));
    let before = sim.nodes[5].node.as_ref().unwrap().catalog_digest();
    sim.on(5, |n, now| n.create_network(now, blue.clone())).unwrap();
    assert_eq!(sim.nodes[5].node.as_ref().unwrap().catalog_digest(), before);

    // A node that joins long after the gossip died down gets it by anti-entropy.
    sim.run_for(Duration::from_secs(20));
    sim.restart(late);
    sim.run_until(Duration::from_secs(10), TICK, |s| {
        s.membership_converged() && all_have(s, &want)
    })
    .expect("late joiner gets the catalog");

    // rm on another member: gone everywhere, and anti-entropy does not bring it back (not even to
    // a node that restarts with an empty catalog).
    sim.on(1, |n, now| n.remove_network(now, "blue")).unwrap();
    let none = BTreeMap::new();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &none))
        .expect("removal reaches everyone");
    assert!(matches!(
        sim.on(1, |n, now| n.remove_network(now, "blue")),
        Err(ControlError::Network(NetworkError::NoSuchNetwork(_)))
    ));
    sim.restart(2);
    sim.run_for(Duration::from_secs(15));
    assert!(all_have(&sim, &none));
    assert!(catalogs_equal(&sim));

    // Re-created later with other parameters: the newer record wins everywhere.
    let blue2 = def("blue", 101, "10.21.0.0/16", Some(24));
    sim.on(6, |n, now| n.create_network(now, blue2.clone())).unwrap();
    let want2: BTreeMap<String, NetworkDef> = [("blue".to_string(), blue2)].into();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want2))
        .expect("re-created network everywhere");
    sim.run_for(Duration::from_secs(5));
    assert!(all_have(&sim, &want2) && catalogs_equal(&sim));
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// (network, block) → holders, from what every node was told it holds.
fn holders(s: &Sim) -> BTreeMap<(String, IpNet), Vec<usize>> {
    let mut m: BTreeMap<(String, IpNet), Vec<usize>> = BTreeMap::new();
    for (i, _) in s.running() {
        for b in &s.nodes[i].blocks {
            m.entry(b.clone()).or_default().push(i);
        }
    }
    m
}

#[test]
fn concurrent_block_requests_never_collide() {
    let n = 12;
    let mut sim = sim(n, 32);
    // 8 blocks of /29 for 12 nodes.
    let tiny = def("tiny", 7, "10.9.0.0/26", Some(29));
    sim.on(4, |c, now| c.create_network(now, tiny.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("tiny".to_string(), tiny.clone())].into();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want))
        .expect("network everywhere");
    // Everyone asks at the same instant (node 0 is the admitter and grants itself directly).
    for i in 0..n {
        let r = sim.on(i, |c, now| c.request_block(now, "tiny")).unwrap();
        match (i, r) {
            (0, BlockOutcome::Granted(b)) => assert_eq!(b, net("10.9.0.0/29")),
            (0, r) => panic!("admitter: {r:?}"),
            (_, r) => assert_eq!(r, BlockOutcome::Requested(sim.nodes[0].id)),
        }
    }
    sim.run_until(Duration::from_secs(10), TICK, |s| {
        holders(s).len() == 8
            && s.running()
                .all(|(_, c)| c.grants().len() == 8 && c.networks()[0].blocks.len() <= 1)
    })
    .expect("all 8 blocks granted and known everywhere");
    let h = holders(&sim);
    assert!(
        h.values().all(|v| v.len() == 1),
        "a block with two holders: {h:?}"
    );
    let views: BTreeSet<Vec<(String, IpNet, NodeId)>> = sim.running().map(|(_, c)| c.grants()).collect();
    assert_eq!(views.len(), 1, "every node holds the same grant table");
    // More requests while full: nothing more is granted, nothing collides.
    for i in 0..n {
        let _ = sim.on(i, |c, now| c.request_block(now, "tiny"));
    }
    sim.run_for(Duration::from_secs(5));
    let h = holders(&sim);
    assert_eq!(h.len(), 8);
    assert!(h.values().all(|v| v.len() == 1), "{h:?}");
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

#[test]
fn a_leaving_holders_blocks_are_released_after_grace_and_regranted() {
    let mut sim = sim(8, 33);
    let two = def("two", 9, "10.8.0.0/27", Some(28));
    sim.on(1, |c, now| c.create_network(now, two.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("two".to_string(), two)].into();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want))
        .expect("network everywhere");
    let (dies, restarts, waits) = (4, 5, 6);
    for i in [dies, restarts] {
        sim.on(i, |c, now| c.request_block(now, "two")).unwrap();
        sim.run_until(Duration::from_secs(5), TICK, |s| s.nodes[i].blocks.len() == 1)
            .expect("granted");
    }
    let dead_block = sim.nodes[dies].blocks.iter().next().unwrap().1;
    // Full: the third request waits.
    sim.on(waits, |c, now| c.request_block(now, "two")).unwrap();
    sim.run_for(Duration::from_secs(3));
    assert!(sim.nodes[waits].blocks.is_empty());

    // A restarted holder (same node id, new generation) keeps its block; the other holder leaves (a
    // signed leave, then gone).
    let kept = sim.nodes[restarts].blocks.clone();
    sim.restart(restarts);
    sim.on(dies, |c, now| c.leave(now)).unwrap();
    sim.run_for(Duration::from_millis(500));
    sim.kill(dies);
    sim.run_until(Duration::from_secs(5), TICK, |s| s.nodes[restarts].blocks == kept)
        .expect("restarted holder is told its block again");

    // Before the grace (5 s here) the departed holder's block stays granted; after it, released and
    // given to the waiting node.
    sim.run_for(Duration::from_secs(2));
    assert!(sim.nodes[waits].blocks.is_empty());
    let t = sim
        .run_until(Duration::from_secs(15), TICK, |s| {
            s.nodes[waits].blocks.iter().any(|(_, b)| *b == dead_block)
        })
        .expect("released and re-granted");
    println!("departed holder's block re-granted after {t:?} more");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.nodes[restarts].blocks, kept);
    let h = holders(&sim);
    assert!(h.values().all(|v| v.len() == 1), "{h:?}");

    // Network removed: holders are told at once; the admitter releases the grants after the grace,
    // so the network re-created later starts with every block free.
    sim.on(2, |c, now| c.remove_network(now, "two")).unwrap();
    sim.run_until(Duration::from_secs(5), TICK, |s| holders(s).is_empty())
        .expect("blocks of a removed network are released to their holders");
    sim.run_until(Duration::from_secs(15), TICK, |s| {
        s.running().all(|(_, c)| c.grants().is_empty())
    })
    .expect("grants of a removed network released after the grace");
    let again = def("two", 9, "10.8.0.0/27", Some(28));
    sim.on(3, |c, now| c.create_network(now, again.clone())).unwrap();
    sim.run_for(Duration::from_secs(3));
    assert!(holders(&sim).is_empty());
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// A holder that stops without leaving (a crash, or a partition: the admitter cannot tell them apart)
/// keeps its blocks however long it is gone, so no partition gives one block to two hosts; an operator
/// ends a dead host's hold by revoking it.
#[test]
fn a_silent_holder_keeps_its_blocks_until_revoked() {
    let mut sim = sim(6, 35);
    let two = def("two", 9, "10.8.0.0/27", Some(28));
    sim.on(1, |c, now| c.create_network(now, two.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("two".to_string(), two)].into();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want))
        .expect("network everywhere");
    let (crashes, holds, waits) = (3, 4, 5);
    for i in [crashes, holds] {
        sim.on(i, |c, now| c.request_block(now, "two")).unwrap();
        sim.run_until(Duration::from_secs(5), TICK, |s| s.nodes[i].blocks.len() == 1)
            .expect("granted");
    }
    let silent_block = sim.nodes[crashes].blocks.iter().next().unwrap().1;
    sim.kill(crashes);
    sim.on(waits, |c, now| c.request_block(now, "two")).unwrap();
    // Four times the grace: the block stays with its silent holder, the request waits.
    sim.run_for(Duration::from_secs(20));
    assert!(
        sim.nodes[waits].blocks.is_empty(),
        "{:?}",
        sim.nodes[waits].blocks
    );
    let admitter_holds = sim
        .running()
        .any(|(_, c)| c.grants().iter().any(|(_, b, _)| *b == silent_block));
    assert!(admitter_holds, "the silent holder's grant was released");
    // Revoked: released after the grace and given to the waiting node.
    let target = sim.nodes[crashes].id;
    sim.on(1, |c, now| c.revoke(now, target).map(|_| ())).unwrap();
    sim.run_until(Duration::from_secs(20), TICK, |s| {
        s.nodes[waits].blocks.iter().any(|(_, b)| *b == silent_block)
    })
    .expect("a revoked holder's block is released and re-granted");
}

#[test]
fn adverts_carry_ips_and_flood_sets_are_per_vni() {
    let mut sim = sim(6, 34);
    let (v100, v200) = (vni(100), vni(200));
    let ip = |a: u8| IpAddr::from([10, 20, 0, a]);
    sim.set_local(1, vec![(v100, mac(1, 1), vec![ip(11), ip(12)])]);
    sim.set_local(2, vec![(v200, mac(2, 1), vec![ip(21)])]);
    sim.set_local(
        3,
        vec![(v100, mac(3, 1), vec![]), (v200, mac(3, 2), vec![ip(32)])],
    );
    let vt = |s: &Sim, i: usize| s.nodes[i].vtep;
    let expect = |s: &Sim| {
        let mut ok = true;
        for (i, _) in s.running() {
            let f = &s.nodes[i].flood;
            let want100: Vec<IpAddr> = [1, 3].iter().filter(|&&j| j != i).map(|&j| vt(s, j)).collect();
            let want200: Vec<IpAddr> = [2, 3].iter().filter(|&&j| j != i).map(|&j| vt(s, j)).collect();
            ok &= f.get(&v100).cloned().unwrap_or_default() == want100;
            ok &= f.get(&v200).cloned().unwrap_or_default() == want200;
        }
        ok
    };
    sim.run_until(Duration::from_secs(5), TICK, |s| {
        expect(s) && s.nodes[0].entries.len() == 4 && s.nodes[5].entries.len() == 4
    })
    .expect("entries and flood sets everywhere");
    assert_eq!(
        sim.nodes[0].entries.get(&(v100, mac(1, 1))),
        Some(&(vt(&sim, 1), vec![ip(11), ip(12)]))
    );
    assert_eq!(
        sim.nodes[5].entries.get(&(v200, mac(3, 2))),
        Some(&(vt(&sim, 3), vec![ip(32)]))
    );
    assert_eq!(
        sim.nodes[0].node.as_ref().unwrap().installed(v200).len(),
        2,
        "installed(vni) lists that VNI's entries"
    );
    // An IP change re-advertises.
    sim.set_local(1, vec![(v100, mac(1, 1), vec![ip(13)])]);
    sim.run_until(Duration::from_secs(5), TICK, |s| {
        s.running()
            .filter(|(i, _)| *i != 1)
            .all(|(i, _)| s.nodes[i].entries.get(&(v100, mac(1, 1))) == Some(&(vt(s, 1), vec![ip(13)])))
    })
    .expect("IP change everywhere");
    // Too many IPs: refused locally, nothing changes.
    let many: Vec<IpAddr> = (0..9).map(ip).collect();
    assert!(matches!(
        sim.on(4, |c, now| c.set_local(now, &[(v100, mac(4, 1), many.clone())])),
        Err(ControlError::TooManyIps { got: 9, .. })
    ));
    // Node 3 dies: it leaves both flood sets.
    sim.kill(3);
    sim.run_until(Duration::from_secs(10), TICK, |s| {
        s.running().all(|(i, _)| {
            let f = &s.nodes[i].flood;
            f.get(&v100).map_or(true, |v| !v.contains(&vt(s, 3)))
                && f.get(&v200).map_or(true, |v| !v.contains(&vt(s, 3)))
        })
    })
    .expect("dead member leaves the flood sets");
    assert_eq!(sim.nodes[0].flood.get(&v100), Some(&vec![vt(&sim, 1)]));
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

#[test]
fn rogue_cannot_forge_grants_or_network_definitions() {
    let n = 6;
    let mut sim = sim(n, 35);
    let blue = def("blue", 100, "10.20.0.0/24", None);
    sim.on(2, |c, now| c.create_network(now, blue.clone())).unwrap();
    sim.run_until(Duration::from_secs(5), TICK, |s| {
        s.running().all(|(i, _)| s.nodes[i].networks.len() == 1)
    })
    .expect("network everywhere");
    sim.on(3, |c, now| c.request_block(now, "blue")).unwrap();
    sim.run_until(Duration::from_secs(5), TICK, |s| {
        s.nodes[3].blocks.len() == 1 && s.running().all(|(_, c)| c.grants().len() == 1)
    })
    .expect("granted");
    sim.run_for(Duration::from_secs(3));
    let (rogue, victim) = (5, 2);
    let grants_before: Vec<_> = sim.running().map(|(_, c)| c.grants()).collect();
    let nets_before: Vec<_> = (0..n).map(|i| sim.nodes[i].networks.clone()).collect();
    let bad_before: u64 = sim.running().map(|(_, c)| c.stats().bad_signatures).sum();
    let rogue_key = new_signer();
    let own_key = std::sync::Arc::clone(&sim.nodes[rogue].signer);

    // Grants signed by the rogue's own key (not the CA): a block to itself, and a release of node 3's.
    let held = *sim.nodes[3].blocks.iter().next().map(|(_, b)| b).unwrap();
    let forged = [
        BlockGrant::issue(
            &own_key,
            "blue",
            net("10.20.0.64/26"),
            sim.nodes[rogue].id,
            1,
            false,
            sim.nodes[0].id,
        )
        .unwrap(),
        BlockGrant::issue(
            &rogue_key,
            "blue",
            held,
            sim.nodes[3].id,
            99,
            true,
            sim.nodes[0].id,
        )
        .unwrap(),
    ];
    // Network records: a tombstone for blue and a new def under the victim's attestation signed by
    // the rogue's key; and one with a self-made attestation.
    let victim_att = sim.nodes[victim].attestation.clone();
    let tomb = NetworkRecord::sign(&own_key, victim_att.clone(), "blue", 100, 50, None).unwrap();
    let red = def("red", 200, "10.30.0.0/16", None);
    let fake = NetworkRecord::sign(&own_key, victim_att, "red", 200, 1, Some(red.clone())).unwrap();
    let fake_ca = new_signer();
    let self_att = control::attest::Attestation::issue(
        &fake_ca,
        sim.nodes[rogue].id,
        vec![sim.nodes[rogue].vtep],
        true,
        own_key.public_key(),
    )
    .unwrap();
    let self_made = NetworkRecord::sign(&own_key, self_att, "red", 200, 1, Some(red)).unwrap();
    let me = sim.identity_of(rogue);
    for to in (0..n).filter(|&i| i != rogue) {
        let dst = sim.identity_of(to);
        let mut items: Vec<Broadcast> = forged.iter().cloned().map(Broadcast::Grant).collect();
        items.extend([tomb.clone(), fake.clone(), self_made.clone()].map(Broadcast::Network));
        for b in items {
            sim.inject(rogue, to, swim_packet(&me, &dst, Message::Gossip, &[], &[b]));
        }
        let msgs = [
            SyncMessage::Grants {
                list: forged.to_vec(),
            },
            SyncMessage::Catalog {
                records: vec![tomb.clone(), fake.clone(), self_made.clone()],
            },
            // A block request on the victim's behalf (signed by the rogue, sent from the rogue).
            SyncMessage::BlockRequest {
                network: "blue".into(),
                requester: sim.nodes[victim].id,
                want: 3,
                sig: own_key
                    .sign(
                        messages::DOMAIN_BLOCK_REQUEST,
                        &messages::block_request_bytes("blue", sim.nodes[victim].id, 3),
                    )
                    .unwrap(),
            },
        ];
        for m in msgs {
            sim.inject(rogue, to, messages::encode_sync(&m).unwrap());
        }
    }
    sim.run_for(Duration::from_secs(5));
    let grants_after: Vec<_> = sim.running().map(|(_, c)| c.grants()).collect();
    assert_eq!(grants_after, grants_before);
    for (i, before) in nets_before.iter().enumerate() {
        assert_eq!(sim.nodes[i].networks, *before, "node {i}");
    }
    let bad_after: u64 = sim.running().map(|(_, c)| c.stats().bad_signatures).sum();
    assert!(bad_after > bad_before, "forgeries were counted");
    assert!(catalogs_equal(&sim));
}

#[test]
fn requests_wait_for_an_admitter_and_a_restarted_admitter_does_not_reuse_blocks() {
    let mut sim = sim(6, 36);
    let four = def("four", 11, "10.7.0.0/27", Some(29));
    sim.on(5, |c, now| c.create_network(now, four.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("four".to_string(), four)].into();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want))
        .expect("network everywhere");
    for i in [1, 2] {
        sim.on(i, |c, now| c.request_block(now, "four")).unwrap();
        sim.run_until(Duration::from_secs(5), TICK, |s| s.nodes[i].blocks.len() == 1)
            .expect("granted");
    }
    let before = holders(&sim);
    // The only admitter dies: a request waits (existing blocks stay).
    sim.kill(0);
    sim.run_until(Duration::from_secs(10), TICK, |s| {
        s.running().all(|(_, c)| c.admitter_addrs().is_empty())
    })
    .expect("admitter declared down");
    assert_eq!(
        sim.on(3, |c, now| c.request_block(now, "four")).unwrap(),
        BlockOutcome::Pending
    );
    sim.run_for(Duration::from_secs(3));
    assert!(sim.nodes[3].blocks.is_empty());
    assert_eq!(holders(&sim), before);
    // It comes back with an empty memory: it syncs the grant table before granting, so node 3 gets
    // a free block, not one of the held ones.
    sim.restart(0);
    sim.run_until(Duration::from_secs(10), TICK, |s| s.nodes[3].blocks.len() == 1)
        .expect("pending request granted once an admitter is back");
    sim.run_for(Duration::from_secs(3));
    let h = holders(&sim);
    assert_eq!(h.len(), 3, "{h:?}");
    assert!(h.values().all(|v| v.len() == 1), "{h:?}");
    for (k, v) in &before {
        assert_eq!(h.get(k), Some(v), "held blocks kept");
    }
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// The documented residual risk with several admitters: two admitters that cannot see each other
/// grant the same block to two holders. After the heal every node keeps the same grant (the lower
/// admitter's), the other holder is told BlockReleased, and a new request gets it another block.
#[test]
fn partitioned_admitters_conflict_resolves_deterministically() {
    // 37 always healed; 47, 73 and 77 never reconverged after the heal before a disconnected node
    // re-announced itself (docs/RELIABILITY.md, `control/tests/sim_partition.rs`).
    for seed in [37, 47, 73, 77] {
        partitioned_admitters_conflict(seed);
    }
}

fn partitioned_admitters_conflict(seed: u64) {
    let mut sim = sim_with(6, seed, 2);
    let duo = def("duo", 12, "10.6.0.0/28", Some(30));
    sim.on(4, |c, now| c.create_network(now, duo.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("duo".to_string(), duo)].into();
    sim.run_until(Duration::from_secs(5), TICK, |s| all_have(s, &want))
        .expect("network everywhere");
    sim.run_for(Duration::from_secs(3));
    sim.partition(&[vec![0, 2], vec![1, 3, 4, 5]]);
    sim.run_until(Duration::from_secs(15), TICK, |s| {
        s.running()
            .all(|(i, c)| c.active_members() == if i == 0 || i == 2 { 1 } else { 3 })
    })
    .expect("each side sees only itself");
    assert_eq!(
        sim.on(2, |c, now| c.request_block(now, "duo")).unwrap(),
        BlockOutcome::Requested(sim.nodes[0].id)
    );
    assert_eq!(
        sim.on(3, |c, now| c.request_block(now, "duo")).unwrap(),
        BlockOutcome::Requested(sim.nodes[1].id)
    );
    let first = net("10.6.0.0/30");
    sim.run_until(Duration::from_secs(5), TICK, |s| {
        s.nodes[2].blocks.contains(&("duo".to_string(), first))
            && s.nodes[3].blocks.contains(&("duo".to_string(), first))
    })
    .expect("both sides granted the same block");
    sim.heal();
    sim.run_until(Duration::from_secs(20), TICK, |s| {
        s.membership_converged() && s.nodes[3].blocks.is_empty()
    })
    .expect("the higher admitter's grant loses after the heal");
    assert!(sim.nodes[2].blocks.contains(&("duo".to_string(), first)));
    let views: BTreeSet<Vec<(String, IpNet, NodeId)>> = sim.running().map(|(_, c)| c.grants()).collect();
    assert_eq!(views.len(), 1, "{views:?}");
    sim.on(3, |c, now| c.request_block(now, "duo")).unwrap();
    sim.run_until(Duration::from_secs(5), TICK, |s| s.nodes[3].blocks.len() == 1)
        .expect("re-requested");
    let h = holders(&sim);
    assert!(h.values().all(|v| v.len() == 1), "{h:?}");
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}

/// Under 20 % message loss definitions and grants still reach everyone (anti-entropy repairs what
/// gossip lost; pending requests are repeated) and no block has two holders.
#[test]
fn networks_and_blocks_under_loss() {
    let n = 8;
    let mut sim = sim(n, 38);
    sim.set_loss(0.2);
    let lossy = def("lossy", 13, "10.5.0.0/24", Some(28));
    sim.on(6, |c, now| c.create_network(now, lossy.clone())).unwrap();
    let want: BTreeMap<String, NetworkDef> = [("lossy".to_string(), lossy)].into();
    sim.run_until(Duration::from_secs(10), TICK, |s| all_have(s, &want))
        .expect("definition everywhere under loss");
    for i in 0..n {
        sim.on(i, |c, now| c.request_block(now, "lossy")).unwrap();
    }
    sim.run_until(Duration::from_secs(20), TICK, |s| {
        s.running()
            .all(|(i, c)| s.nodes[i].blocks.len() == 1 && c.grants().len() == n)
    })
    .expect("every node granted one block under loss");
    let h = holders(&sim);
    assert_eq!(h.len(), n);
    assert!(h.values().all(|v| v.len() == 1), "{h:?}");
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}
