use std::net::IpAddr;

use foca::State;

use super::membership::hex_id;
use super::*;
use crate::messages::{encode_swim, WIRE_VERSION};

use crate::attest::{Attestation, Signer};
use crate::identity::tests::signer;

/// One CA and node keys for the tests of this module.
struct Keys {
    ca: Arc<Signer>,
    nodes: Vec<Arc<Signer>>,
}

fn keys() -> Keys {
    Keys {
        ca: Arc::new(signer()),
        nodes: (0..6).map(|_| Arc::new(signer())).collect(),
    }
}

fn identity(k: &Keys, i: u8, generation: u64) -> NodeIdentity {
    let addr = SocketAddr::from(([127, 0, 0, i], 7948));
    let vtep = IpAddr::from([10, 0, 0, i]);
    let a = Attestation::issue(
        &k.ca,
        NodeId(i as u64),
        vec![vtep, addr.ip()],
        i == 1,
        k.nodes[i as usize].public_key(),
    )
    .unwrap();
    NodeIdentity::signed(addr, vtep, generation, a, &k.nodes[i as usize]).unwrap()
}

fn node_with(k: &Keys, i: u8) -> ControlNode {
    let trust = Trust {
        ca_key: k.ca.public_key(),
        signer: Arc::clone(&k.nodes[i as usize]),
        ca_signer: (i == 1).then(|| Arc::clone(&k.ca)),
        revoked: RevocationList::default(),
    };
    ControlNode::new(
        Instant::now(),
        identity(k, i, 1),
        trust,
        ControlConfig::default(),
        i as u64,
    )
}

fn node(i: u8) -> ControlNode {
    node_with(&keys(), i)
}

/// Garbage of every shape (random bytes, random bodies behind valid envelopes) is rejected or
/// ignored without panicking and without changing membership or the FDB.
#[test]
fn hex_id_is_display() {
    for v in [0, 1, 0x1000, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
        assert_eq!(hex_id(NodeId(v)), NodeId(v).to_string());
    }
}

#[test]
fn garbage_never_panics_or_changes_state() {
    let mut n = node(1);
    let now = Instant::now();
    let from = SocketAddr::from(([127, 0, 0, 2], 7948));
    let mut rng = XorShift::new(42);
    for round in 0..20_000 {
        let len = rng.below(300);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        match round % 3 {
            0 => {}
            1 => b = encode_swim(&b),
            _ => {
                b.insert(0, 1);
                b.insert(0, WIRE_VERSION);
            }
        }
        let _ = n.handle_message(now, from, &b);
    }
    assert_eq!(n.active_members(), 0);
    assert!(n.installed_fdb().is_empty());
    while let Some(o) = n.poll_output() {
        assert!(
            !matches!(o, Output::FdbInstall { .. } | Output::MembersChanged(_)),
            "{o:?}"
        );
    }
    let s = n.stats();
    assert_eq!(s.messages_in, 20_000);
    assert!(s.decode_errors + s.swim_errors > 10_000, "{s:?}");
}

/// `overlayctl stats` shows `ControlStats` as serialized: the gossip budget's counters appear
/// under the names docs/RELIABILITY.md gives.
#[test]
fn budget_counters_are_exported() {
    let v = serde_json::to_value(ControlStats::default()).unwrap();
    for k in [
        "gossip_bytes_sent",
        "sync_bytes_sent",
        "sync_messages_sent",
        "sync_deferred",
        "sync_dropped",
        "sync_pending",
        "advert_batches",
        "local_over_cap",
        "hellos_sent",
        "hellos_accepted",
        "downs_announced",
        "downs_applied",
        "parked_dropped",
    ] {
        assert_eq!(v.get(k), Some(&serde_json::json!(0)), "{k}");
    }
}

/// A member cannot announce another member's leave: not from another address, and not with a
/// signature made by another key even from the victim's address.
#[test]
fn leave_on_behalf_of_another_is_rejected() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let victim = identity(&k, 3, 1);
    let forged = LeaveNotice {
        identity: victim.clone(),
        sig: LeaveNotice::sign(&identity(&k, 2, 1), &k.nodes[2]).unwrap().sig,
    };
    let msg = messages::encode_sync(&SyncMessage::Leave {
        notice: forged.clone(),
    })
    .unwrap();
    n.handle_message(Instant::now(), SocketAddr::from(([127, 0, 0, 2], 7948)), &msg)
        .unwrap();
    assert_eq!(n.stats().rejected, 1);
    n.handle_message(Instant::now(), victim.addr, &msg).unwrap();
    assert_eq!(n.stats().bad_signatures, 1);
    assert!(n.members().iter().all(|m| m.state != MemberState::Left));
    // Relayed as a piggybacked broadcast: refused by the handler too.
    let pkt = crate::sim::swim_packet(
        &identity(&k, 2, 1),
        n.identity(),
        foca::Message::Gossip,
        &[],
        &[Broadcast::Leave(forged)],
    );
    assert!(n
        .handle_message(Instant::now(), SocketAddr::from(([127, 0, 0, 2], 7948)), &pkt)
        .is_err());
    assert!(n.members().iter().all(|m| m.state != MemberState::Left));
}

/// A forged identity (wrong key, wrong VTEP, unattested, other CA) never enters the member table;
/// a valid one does, and its verification is cached.
#[test]
fn forged_identities_never_reach_foca() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let me = n.identity().clone();
    let from = SocketAddr::from(([127, 0, 0, 2], 7948));
    let good = identity(&k, 2, 1);
    let mut wrong_vtep = good.clone();
    wrong_vtep.vtep = IpAddr::from([10, 0, 0, 3]);
    let mut wrong_gen = good.clone();
    wrong_gen.generation = 99;
    let mut unattested = good.clone();
    unattested.proof = None;
    let foreign = {
        let other = Keys {
            ca: Arc::new(signer()),
            nodes: k.nodes.clone(),
        };
        identity(&other, 2, 1)
    };
    for (i, bad) in [wrong_vtep, wrong_gen, unattested, foreign]
        .into_iter()
        .enumerate()
    {
        // As the sender, and as a membership update from a valid sender.
        let p = crate::sim::swim_packet(&bad, &me, foca::Message::Announce, &[], &[]);
        assert!(n.handle_message(Instant::now(), from, &p).is_err(), "{i} as src");
        let p = crate::sim::swim_packet(
            &identity(&k, 3, 1),
            &me,
            foca::Message::Gossip,
            &[Member::alive(bad)],
            &[],
        );
        assert!(
            n.handle_message(Instant::now(), from, &p).is_err(),
            "{i} as update"
        );
    }
    assert_eq!(n.active_members(), 0);
    let p = crate::sim::swim_packet(&good, &me, foca::Message::Gossip, &[], &[]);
    n.handle_message(Instant::now(), from, &p).unwrap();
    let before = n.stats().identity_verifications;
    for _ in 0..10 {
        n.handle_message(Instant::now(), from, &p).unwrap();
    }
    assert_eq!(n.active_members(), 1);
    let s = n.stats();
    assert_eq!(s.identities_refused, 8, "{s:?}");
    assert_eq!(
        s.identity_verifications, before,
        "repeated identities are cache hits"
    );
}

/// An admitter that founded the cluster and is alone grants at once; one that (re)started by
/// joining waits until its grant table matched a peer's (it could otherwise reuse held blocks).
#[test]
fn restarted_admitter_grants_only_after_sync() {
    let k = keys();
    let now = Instant::now();
    let def = crate::NetworkDef::new("blue", 5, "10.1.0.0/24".parse().unwrap(), None, false, None).unwrap();
    let mut founder = node_with(&k, 1);
    founder.create_network(now, def.clone()).unwrap();
    assert_eq!(
        founder.request_block(now, "blue").unwrap(),
        BlockOutcome::Granted("10.1.0.0/26".parse().unwrap())
    );
    let mut restarted = node_with(&k, 1);
    restarted
        .join(now, SocketAddr::from(([127, 0, 0, 2], 7948)))
        .unwrap();
    restarted.create_network(now, def).unwrap();
    assert_eq!(
        restarted.request_block(now, "blue").unwrap(),
        BlockOutcome::Pending
    );
    assert!(restarted.grants().is_empty());
    // A non-admitter with no admitter known: pending too.
    let mut plain = node_with(&k, 2);
    plain
        .create_network(
            now,
            crate::NetworkDef::new("red", 6, "10.2.0.0/24".parse().unwrap(), None, false, None).unwrap(),
        )
        .unwrap();
    assert_eq!(plain.request_block(now, "red").unwrap(), BlockOutcome::Pending);
    assert!(matches!(
        plain.request_block(now, "nope"),
        Err(ControlError::Network(crate::NetworkError::NoSuchNetwork(_)))
    ));
}

/// Only an admitter acts on a revoke request, only from a member, only with the member's signature,
/// and never against an admitter; the revocation it signs is enforced locally at once.
#[test]
fn revoke_requests_are_checked() {
    let k = keys();
    let mut admitter = node_with(&k, 1);
    let me = admitter.identity().clone();
    let requester = identity(&k, 2, 1);
    let now = Instant::now();
    // Node 2 becomes a member of node 1's view.
    let p = crate::sim::swim_packet(&requester, &me, foca::Message::Gossip, &[], &[]);
    admitter.handle_message(now, requester.addr, &p).unwrap();
    admitter.reconcile_membership();
    let req = |target: u64, key: &Signer, requester: NodeId| {
        let msg = messages::revoke_request_bytes(NodeId(target), requester);
        messages::encode_sync(&SyncMessage::RevokeRequest {
            target: NodeId(target),
            requester,
            sig: key.sign(messages::DOMAIN_REVOKE_REQUEST, &msg).unwrap(),
        })
        .unwrap()
    };
    // Signed by another key, or from another address: refused.
    admitter
        .handle_message(now, requester.addr, &req(3, &k.nodes[3], NodeId(2)))
        .unwrap();
    let other = SocketAddr::from(([127, 0, 0, 9], 7948));
    admitter
        .handle_message(now, other, &req(3, &k.nodes[2], NodeId(2)))
        .unwrap();
    // Against the admitter itself: refused.
    admitter
        .handle_message(now, requester.addr, &req(1, &k.nodes[2], NodeId(2)))
        .unwrap();
    assert_eq!(admitter.stats().revoked, 0);
    assert_eq!(admitter.stats().bad_signatures, 2);
    // Valid: revoked and enforced here.
    admitter
        .handle_message(now, requester.addr, &req(3, &k.nodes[2], NodeId(2)))
        .unwrap();
    assert!(admitter.revocations().contains(NodeId(3)));
    let revoked_out =
        std::iter::from_fn(|| admitter.poll_output()).any(|o| o == Output::Revoked { node: NodeId(3) });
    assert!(revoked_out);
    // A non-admitter cannot sign: it forwards to the admitter it knows of.
    let mut plain = node_with(&k, 2);
    assert!(matches!(
        plain.revoke(now, NodeId(3)),
        Err(ControlError::NoAdmitter)
    ));
    let p = crate::sim::swim_packet(&me, plain.identity(), foca::Message::Gossip, &[], &[]);
    plain.handle_message(now, me.addr, &p).unwrap();
    assert_eq!(
        plain.revoke(now, NodeId(3)).unwrap(),
        RevokeOutcome::Forwarded(NodeId(1))
    );
    assert!(matches!(
        plain.revoke(now, NodeId(2)),
        Err(ControlError::RevokeSelf)
    ));
}

/// A node declared down rejoins with a renewed identity; gossip about its old identity still spreading
/// afterwards must not make it list itself twice (alive, and dead at its own address); nor is a peer's
/// superseded identity listed next to the peer's renewed one. `peers` lists each node once, newest
/// identity. (The CI flake of `tests/resilience/partition.rs`: host 2 listed itself alive and dead.)
#[test]
fn old_identities_are_not_listed_after_a_renewal() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let old = n.identity().clone();
    let peer = identity(&k, 2, 1);
    // The cluster declared this node down: it rejoins with a renewed identity (a relayed copy of the
    // death in the same packet is already about its past identity).
    let death = [Member::down(old.clone()), Member::down(old.clone())];
    let p = crate::sim::swim_packet(&peer, &old, foca::Message::Gossip, &death, &[]);
    n.handle_message(now, peer.addr, &p).unwrap();
    assert_eq!(n.stats().rejoins, 1);
    let me = n.identity().clone();
    assert_eq!((me.addr, me.renewal), (old.addr, 1));
    assert_eq!(n.members().len(), 2, "{:?}", n.members());
    // The old death is still being gossiped (by every member that relays it): foca takes it as a
    // stale update about a past identity of ours, as it does with news of this node's previous run.
    // And the peer renewed too; its old identity's death arrives after its renewed identity.
    let peer_renewed = foca::Identity::renew(&peer).unwrap();
    let previous_run = identity(&k, 1, 0);
    for updates in [
        vec![Member::down(old.clone())],
        vec![Member::alive(peer_renewed.clone())],
        vec![Member::down(peer.clone()), Member::down(old.clone())],
        vec![Member::alive(previous_run)],
    ] {
        let p = crate::sim::swim_packet(&peer_renewed, &me, foca::Message::Gossip, &updates, &[]);
        n.handle_message(now, peer.addr, &p).unwrap();
    }
    let rows = n.members();
    let listed = |addr: SocketAddr| -> Vec<(MemberState, u32)> {
        rows.iter()
            .filter(|m| m.addr == addr)
            .map(|m| (m.state, m.renewal))
            .collect()
    };
    assert_eq!(listed(me.addr), vec![(MemberState::Alive, 1)], "{rows:?}");
    assert_eq!(listed(peer.addr), vec![(MemberState::Alive, 1)], "{rows:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
    // foca keeps the old death (until `remove_down_after`): a later copy of it is stale, not a fresh
    // insert that foca would broadcast again (this node re-spreading its own old death).
    let held = |n: &ControlNode| {
        n.foca
            .iter_membership_state()
            .any(|m| m.id() == &old && m.state() == State::Down)
    };
    assert!(held(&n));
    let p = crate::sim::swim_packet(
        &peer_renewed,
        &me,
        foca::Message::Gossip,
        &[Member::down(old.clone())],
        &[],
    );
    n.handle_message(now, peer.addr, &p).unwrap();
    assert!(held(&n));
    assert_eq!(n.members().len(), 2, "{:?}", n.members());
}

/// Only this node's own past identities are hidden: another node id that foca holds as down at our
/// address (a former holder of the address) is listed, dead.
#[test]
fn another_node_down_at_our_address_is_listed() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let peer = identity(&k, 2, 1);
    // Node 3, attested for our address, with a newer generation than ours.
    let vtep = IpAddr::from([10, 0, 0, 3]);
    let a = Attestation::issue(
        &k.ca,
        NodeId(3),
        vec![vtep, me.addr.ip()],
        false,
        k.nodes[3].public_key(),
    )
    .unwrap();
    let stranger = NodeIdentity::signed(me.addr, vtep, 5, a, &k.nodes[3]).unwrap();
    let p = crate::sim::swim_packet(
        &peer,
        &me,
        foca::Message::Gossip,
        &[Member::down(stranger.clone())],
        &[],
    );
    n.handle_message(now, peer.addr, &p).unwrap();
    let rows = n.members();
    let at_ours: Vec<(String, MemberState)> = rows
        .iter()
        .filter(|m| m.addr == me.addr)
        .map(|m| (m.id.clone(), m.state))
        .collect();
    assert_eq!(
        at_ours,
        vec![
            (hex_id(me.id), MemberState::Alive),
            (hex_id(NodeId(3)), MemberState::Dead)
        ],
        "{rows:?}"
    );
}

/// What `pick` makes of each message a node sent since the last call (its destination and bytes), sorted.
fn sent<T: Ord>(n: &mut ControlNode, pick: impl Fn(SocketAddr, &[u8]) -> Option<T>) -> Vec<T> {
    let mut v = Vec::new();
    while let Some(o) = n.poll_output() {
        if let Output::Send { to, bytes } = o {
            v.extend(pick(to, &bytes));
        }
    }
    v.sort_unstable();
    v
}

/// foca's Feed (a join answer) from `from` to `to`, listing `member` alive.
fn feed(from: &NodeIdentity, to: &NodeIdentity, member: &NodeIdentity) -> Vec<u8> {
    crate::sim::swim_packet(
        from,
        to,
        foca::Message::Feed,
        &[Member::alive(member.clone())],
        &[],
    )
}

/// A suspicion of a member first heard from after the probe that raised it (it waited for a new
/// connection) does not count against local health even when its down timer was deferred by the
/// silence window and the refutation is seen only at the later firing.
#[test]
fn an_unmet_suspicion_stays_unmet_when_its_timer_was_deferred() {
    use std::time::Duration;
    let k = keys();
    let mut n = node_with(&k, 1);
    let t0 = Instant::now();
    let me = n.identity().clone();
    let (p2, p3) = (identity(&k, 2, 1), identity(&k, 3, 1));
    let gossip = |members: &[Member<NodeIdentity>]| {
        crate::sim::swim_packet(&p2, &me, foca::Message::Gossip, members, &[])
    };
    n.handle_message(t0, p2.addr, &gossip(&[Member::alive(p3.clone())]))
        .unwrap();
    // p3 is suspected (our probe of it failed), then heard from for the first time just after.
    let t1 = t0 + Duration::from_secs(5);
    let suspect = Member::new(p3.clone(), 0, State::Suspect);
    n.handle_message(t1, p2.addr, &gossip(&[suspect])).unwrap();
    assert!(n
        .foca
        .iter_membership_state()
        .any(|m| m.id() == &p3 && m.state() == State::Suspect));
    // The down timer of our own suspicion (foca schedules it when its probe of p3 fails).
    let down_timer = Timer(TimerKind::Swim(foca::Timer::ChangeSuspectToDown {
        member_id: p3.clone(),
        incarnation: 0,
        token: 0,
    }));
    let t2 = t1 + Duration::from_millis(10);
    let hello = crate::sim::swim_packet(&p3, &me, foca::Message::Gossip, &[], &[]);
    n.handle_message(t2, p3.addr, &hello).unwrap();
    // First firing: still suspect, but heard from 0.69 s ago: deferred to the silence window's end.
    let t3 = t1 + n.config.suspect_to_down_after;
    n.handle_timer(t3, down_timer.clone()).unwrap();
    assert_eq!(n.stats().suspicions_deferred, 1);
    // Refuted meanwhile; the deferred firing comes long after p3 was first heard from.
    let refuted = Member::new(p3.clone(), 1, State::Alive);
    n.handle_message(t3 + Duration::from_millis(100), p2.addr, &gossip(&[refuted]))
        .unwrap();
    n.handle_timer(t2 + n.config.suspect_silence, down_timer).unwrap();
    assert_eq!((n.stats().stale_down_timers, n.stats().unmet_suspicions), (1, 1));
    assert_eq!(
        n.health, 0,
        "a suspicion raised before we ever heard from p3 says nothing of our health"
    );
}

mod joins;
mod reannounce;
