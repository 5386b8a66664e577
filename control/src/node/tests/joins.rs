//! Joining through a seed: introductions (who may send them), the first join answer's put-off
//! meetings, and the block requests an admitter coming up gets.

use super::*;

/// An `Introduce` message about `identity`, not listed in the joiner's answer (`listed: false`).
fn introduce(identity: &NodeIdentity) -> Vec<u8> {
    messages::encode_sync(&SyncMessage::Introduce {
        identity: identity.clone(),
        listed: false,
    })
    .unwrap()
}

/// Whether foca holds `id`'s node id (any state).
fn holds_node(n: &ControlNode, id: &NodeIdentity) -> bool {
    n.foca.iter_membership_state().any(|m| m.id().id == id.id)
}

/// An introduction from an address that is no member (never joined, not a seed) is refused and
/// counted, however valid the introduced identity; the same introduction from a member is taken.
#[test]
fn an_introduction_from_a_non_member_is_refused() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let (p2, p3, p4) = (identity(&k, 2, 1), identity(&k, 3, 1), identity(&k, 4, 1));
    let gossip = crate::sim::swim_packet(&p2, &me, foca::Message::Gossip, &[], &[]);
    n.handle_message(now, p2.addr, &gossip).unwrap();
    assert_eq!(n.active_members(), 1);
    // From an address nobody holds, and from a valid node (p4, attested) that never joined.
    let stranger = SocketAddr::from(([127, 0, 0, 9], 7948));
    for from in [stranger, p4.addr] {
        let before = n.stats();
        n.handle_message(now, from, &introduce(&p3)).unwrap();
        let after = n.stats();
        assert_eq!(after.rejected - before.rejected, 1, "from {from}: {after:?}");
        assert_eq!(after.introductions_accepted, 0, "from {from}");
        assert!(!holds_node(&n, &p3), "from {from}");
        assert_eq!(n.active_members(), 1);
    }
    // The same introduction from the member: taken.
    n.handle_message(now, p2.addr, &introduce(&p3)).unwrap();
    assert_eq!(n.stats().introductions_accepted, 1);
    assert_eq!(n.active_members(), 2);
}

/// A seed (the member we joined through) may introduce joiners before its answer is processed
/// (nothing held at its address yet), and while we hold it alive or suspect.
#[test]
fn an_introduction_from_a_seed_counts_while_it_is_unanswered_alive_or_suspect() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let (p2, p3, p4, p5) = (
        identity(&k, 2, 1),
        identity(&k, 3, 1),
        identity(&k, 4, 1),
        identity(&k, 5, 1),
    );
    n.join(now, p2.addr).unwrap();
    // Its introduction overtakes its answer: nothing held at its address yet.
    assert!(!n.foca.iter_membership_state().any(|m| m.id().addr == p2.addr));
    n.handle_message(now, p2.addr, &introduce(&p3)).unwrap();
    assert_eq!(n.stats().introductions_accepted, 1);
    assert!(holds_node(&n, &p3));
    // Alive.
    let gossip = crate::sim::swim_packet(&p2, &me, foca::Message::Gossip, &[], &[]);
    n.handle_message(now, p2.addr, &gossip).unwrap();
    n.handle_message(now, p2.addr, &introduce(&p4)).unwrap();
    assert_eq!(n.stats().introductions_accepted, 2);
    // Suspect (gossiped by p3).
    let suspect = Member::new(p2.clone(), 0, State::Suspect);
    let p = crate::sim::swim_packet(&p3, &me, foca::Message::Gossip, &[suspect], &[]);
    n.handle_message(now, p3.addr, &p).unwrap();
    assert!(n
        .foca
        .iter_membership_state()
        .any(|m| m.id() == &p2 && m.state() == State::Suspect));
    n.handle_message(now, p2.addr, &introduce(&p5)).unwrap();
    assert_eq!(n.stats().introductions_accepted, 3);
    assert!(holds_node(&n, &p5));
    assert_eq!(n.stats().rejected, 0);
}

/// A seed we hold as down (dead), or that announced its leave, introduces no one: joining through
/// it once is no trust in it afterwards.
#[test]
fn an_introduction_from_a_dead_or_departed_seed_is_refused() {
    let k = keys();
    let now = Instant::now();
    let (p2, p3, p4) = (identity(&k, 2, 1), identity(&k, 3, 1), identity(&k, 4, 1));
    for departed in [false, true] {
        let mut n = node_with(&k, 1);
        let me = n.identity().clone();
        n.join(now, p2.addr).unwrap();
        let gossip =
            crate::sim::swim_packet(&p2, &me, foca::Message::Gossip, &[Member::alive(p3.clone())], &[]);
        n.handle_message(now, p2.addr, &gossip).unwrap();
        assert_eq!(n.active_members(), 2);
        if departed {
            let notice = LeaveNotice::sign(&p2, &k.nodes[2]).unwrap();
            let leave = messages::encode_sync(&SyncMessage::Leave { notice }).unwrap();
            n.handle_message(now, p2.addr, &leave).unwrap();
        } else {
            let death =
                crate::sim::swim_packet(&p3, &me, foca::Message::Gossip, &[Member::down(p2.clone())], &[]);
            n.handle_message(now, p3.addr, &death).unwrap();
        }
        assert!(
            n.foca
                .iter_membership_state()
                .any(|m| m.id() == &p2 && m.state() == State::Down),
            "departed {departed}: the seed must be held down for this test to mean anything"
        );
        assert_eq!(n.active_members(), 1);
        let before = n.stats();
        n.handle_message(now, p2.addr, &introduce(&p4)).unwrap();
        let after = n.stats();
        assert_eq!(
            after.rejected - before.rejected,
            1,
            "departed {departed}: {after:?}"
        );
        assert_eq!(after.introductions_accepted, 0, "departed {departed}");
        assert!(!holds_node(&n, &p4), "departed {departed}");
        assert_eq!(n.active_members(), 1);
        // Still refused once foca has forgotten the seed (`remove_down_after`, a day later).
        let mut forget = None;
        while let Some(o) = n.poll_output() {
            if let Output::ScheduleTimer { at, timer } = o {
                if matches!(&timer.0, TimerKind::Swim(foca::Timer::RemoveDown(id)) if id.addr == p2.addr) {
                    forget = Some((at, timer));
                }
            }
        }
        let (at, timer) = forget.expect("foca schedules forgetting the down seed");
        n.handle_timer(at, timer).unwrap();
        assert!(
            !n.foca.iter_membership_state().any(|m| m.id().addr == p2.addr),
            "departed {departed}: foca forgot the seed"
        );
        n.handle_message(at, p2.addr, &introduce(&p4)).unwrap();
        assert_eq!(n.stats().rejected - after.rejected, 1, "departed {departed}");
        assert!(!holds_node(&n, &p4), "departed {departed}");
        // The same introduction from the live member: taken.
        n.handle_message(at, p3.addr, &introduce(&p4)).unwrap();
        assert_eq!(n.stats().introductions_accepted, 1, "departed {departed}");
    }
}

/// A seed that announced its leave before we ever held it as a member (its Leave overtook its
/// answer to our join) introduces no one, also once foca has forgotten the down entry the Leave
/// made: then foca holds nothing at its address and never held it as a member (`held_seeds`), and
/// only `left` tells it from a seed that has not answered yet. A seed that did not leave may.
#[test]
fn an_introduction_from_a_seed_that_left_before_answering_is_refused() {
    let k = keys();
    let (p2, p3) = (identity(&k, 2, 1), identity(&k, 3, 1));
    for left in [false, true] {
        let mut n = node_with(&k, 1);
        let mut now = Instant::now();
        n.join(now, p2.addr).unwrap();
        if left {
            let notice = LeaveNotice::sign(&p2, &k.nodes[2]).unwrap();
            let leave = messages::encode_sync(&SyncMessage::Leave { notice }).unwrap();
            n.handle_message(now, p2.addr, &leave).unwrap();
            assert!(n.left.contains_key(&p2.addr));
            // foca files the seed as down; forget it (`remove_down_after`, a day later).
            let mut forget = None;
            while let Some(o) = n.poll_output() {
                if let Output::ScheduleTimer { at, timer } = o {
                    if matches!(&timer.0, TimerKind::Swim(foca::Timer::RemoveDown(id)) if id.addr == p2.addr)
                    {
                        forget = Some((at, timer));
                    }
                }
            }
            let (at, timer) = forget.expect("foca schedules forgetting the departed seed");
            n.handle_timer(at, timer).unwrap();
            now = at;
        }
        // Nothing but `left` tells it from an unanswered seed.
        assert!(
            !n.foca.iter_membership_state().any(|m| m.id().addr == p2.addr),
            "left {left}: foca must hold nothing at the seed's address for this test to mean anything"
        );
        assert!(!n.held_seeds.contains(&p2.addr), "left {left}");
        let before = n.stats();
        n.handle_message(now, p2.addr, &introduce(&p3)).unwrap();
        let after = n.stats();
        assert_eq!(
            after.rejected - before.rejected,
            u64::from(left),
            "left {left}: {after:?}"
        );
        assert_eq!(after.introductions_accepted, u64::from(!left), "left {left}");
        assert_eq!(holds_node(&n, &p3), !left, "left {left}");
    }
}

/// The members a node sent its Hello to since the last call.
fn hellos_sent_to(n: &mut ControlNode) -> Vec<SocketAddr> {
    sent(n, |to, bytes| {
        matches!(
            messages::decode(bytes),
            Ok(Packet::Sync(SyncMessage::Hello { .. }))
        )
        .then_some(to)
    })
}

/// Only the first Feed a seed sends after our join puts off our meetings with the members it lists
/// (the seed relays between us); a later Feed (the answer to a renewal's re-announce, or an
/// unsolicited one) does not: we meet the members it lists at once.
#[test]
fn only_the_first_join_answer_puts_meetings_off() {
    use std::time::Duration;
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let (p2, p3, p4) = (identity(&k, 2, 1), identity(&k, 3, 1), identity(&k, 4, 1));
    n.join(now, p2.addr).unwrap();
    assert!(n.put_off.awaiting_answer);
    hellos_sent_to(&mut n);
    // The answer to our join: our meeting with p3 is put off (no Hello now).
    n.handle_message(now, p2.addr, &feed(&p2, &me, &p3)).unwrap();
    assert!(!n.put_off.awaiting_answer);
    assert_eq!(n.active_members(), 2);
    assert_eq!(hellos_sent_to(&mut n), vec![]);
    // A second Feed from the seed: p4 is met at once.
    n.handle_message(now, p2.addr, &feed(&p2, &me, &p4)).unwrap();
    assert_eq!(n.active_members(), 3);
    assert_eq!(hellos_sent_to(&mut n), vec![p4.addr]);
    // The put-off meeting with p3 (and only it) happens later.
    n.handle_timer(now + Duration::from_secs(5), Timer(TimerKind::Meet))
        .unwrap();
    assert_eq!(n.stats().meetings_put_off, 1);
    assert_eq!(hellos_sent_to(&mut n), vec![p3.addr]);
}

/// A renewal (foca's Rejoin: declared down, renewed identity) ends the wait for a join answer: a
/// seed's Feed after it answers our re-announce, and nobody relays for that, so the members it
/// lists are met at once.
#[test]
fn a_rejoin_ends_the_wait_for_the_join_answer() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let (p2, p3) = (identity(&k, 2, 1), identity(&k, 3, 1));
    n.join(now, p2.addr).unwrap();
    assert!(n.put_off.awaiting_answer);
    // Declared down before any answer came: foca renews our identity.
    let undead = crate::sim::swim_packet(&p2, &me, foca::Message::TurnUndead, &[], &[]);
    n.handle_message(now, p2.addr, &undead).unwrap();
    assert_eq!(n.stats().rejoins, 1);
    assert!(!n.put_off.awaiting_answer);
    hellos_sent_to(&mut n);
    // The seed's answer to our re-announce: p3 is met at once.
    let renewed = n.identity().clone();
    n.handle_message(now, p2.addr, &feed(&p2, &renewed, &p3)).unwrap();
    assert!(n.foca.iter_members().any(|m| m.id() == &p3));
    assert_eq!(hellos_sent_to(&mut n), vec![p3.addr]);
}

/// The Hellos and block requests a node sent since the last call, in order: (to, "hello" or
/// "block request").
fn hellos_and_block_requests(n: &mut ControlNode) -> Vec<(SocketAddr, &'static str)> {
    let mut v = Vec::new();
    while let Some(o) = n.poll_output() {
        let Output::Send { to, bytes } = o else { continue };
        match messages::decode(&bytes) {
            Ok(Packet::Sync(SyncMessage::Hello { .. })) => v.push((to, "hello")),
            Ok(Packet::Sync(SyncMessage::BlockRequest { .. })) => v.push((to, "block request")),
            _ => {}
        }
    }
    v
}

/// An admitter coming up makes a member with a pending block request ask it at once, once: after
/// its Hello when they meet at once, without waiting for the meeting when it is put off; the
/// put-off meeting does not ask again (the anti-entropy tick re-sends what is still pending).
#[test]
fn an_admitter_coming_up_is_asked_for_pending_blocks_once() {
    use std::time::Duration;
    let k = keys();
    let now = Instant::now();
    let (admitter, p3) = (identity(&k, 1, 1), identity(&k, 3, 1));
    let pending = |n: &mut ControlNode| {
        let def =
            crate::NetworkDef::new("red", 6, "10.2.0.0/24".parse().unwrap(), None, false, None).unwrap();
        n.create_network(now, def).unwrap();
        assert_eq!(n.request_block(now, "red").unwrap(), BlockOutcome::Pending);
        hellos_and_block_requests(n);
    };
    // Met at once (learnt from p3's gossip): Hello, then the request.
    let mut n = node_with(&k, 2);
    let me = n.identity().clone();
    pending(&mut n);
    let gossip = crate::sim::swim_packet(
        &p3,
        &me,
        foca::Message::Gossip,
        &[Member::alive(admitter.clone())],
        &[],
    );
    n.handle_message(now, p3.addr, &gossip).unwrap();
    assert_eq!(
        hellos_and_block_requests(&mut n),
        vec![(admitter.addr, "hello"), (admitter.addr, "block request")]
    );
    // Put off (listed by the answer to our join): asked at once, not again at the meeting.
    let mut n = node_with(&k, 2);
    pending(&mut n);
    n.join(now, p3.addr).unwrap();
    hellos_and_block_requests(&mut n);
    n.handle_message(now, p3.addr, &feed(&p3, &me, &admitter))
        .unwrap();
    assert_eq!(
        hellos_and_block_requests(&mut n),
        vec![(admitter.addr, "block request")]
    );
    let met = now + Duration::from_secs(5);
    n.handle_timer(met, Timer(TimerKind::Meet)).unwrap();
    assert_eq!(n.stats().meetings_put_off, 1);
    assert_eq!(hellos_and_block_requests(&mut n), vec![(admitter.addr, "hello")]);
    // Still pending: the tick asks again.
    n.handle_timer(met, Timer(TimerKind::AntiEntropy)).unwrap();
    assert_eq!(
        hellos_and_block_requests(&mut n),
        vec![(admitter.addr, "block request")]
    );
}
