//! A renewed identity re-announced: a node declared down (TurnUndead) knocks at the addresses foca
//! holds until a member's packet reconnects it.

use super::*;

/// The SWIM Announces a node sent since the last call: (destination, sender identity's renewal).
fn announces_sent(n: &mut ControlNode) -> Vec<(SocketAddr, u32)> {
    use foca::Codec;
    sent(n, |to, bytes| {
        let Ok(Packet::Swim(body)) = messages::decode(bytes) else {
            return None;
        };
        let h = Codec::<NodeIdentity>::decode_header(&mut foca::PostcardCodec, body).ok()?;
        (h.message == foca::Message::Announce).then_some((to, h.src.renewal))
    })
}

/// A TurnUndead makes foca renew this node's identity and resets it to Disconnected with no way back
/// of its own (it ignores every packet not addressed to its new identity, and runs no periodic task
/// while disconnected). The node then announces its renewed identity to held addresses: 2 at once,
/// 2 more on each anti-entropy tick, none once a member's packet reconnected foca.
#[test]
fn a_renewed_disconnected_node_re_announces_itself() {
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let (p2, p3) = (identity(&k, 2, 1), identity(&k, 3, 1));
    let hello = crate::sim::swim_packet(&p2, &me, foca::Message::Gossip, &[Member::alive(p3.clone())], &[]);
    n.handle_message(now, p2.addr, &hello).unwrap();
    assert_eq!(n.active_members(), 2);
    assert!(n.reconnect.connected);
    // Connected: the anti-entropy tick announces nothing.
    announces_sent(&mut n);
    n.handle_timer(now, Timer(TimerKind::AntiEntropy)).unwrap();
    assert_eq!(announces_sent(&mut n), vec![]);
    // Declared down: foca renews and is disconnected although it holds two active members.
    let undead = crate::sim::swim_packet(&p2, &me, foca::Message::TurnUndead, &[], &[]);
    n.handle_message(now, p2.addr, &undead).unwrap();
    assert_eq!((n.stats().rejoins, n.identity().renewal), (1, 1));
    assert!(!n.reconnect.connected);
    assert_eq!(n.active_members(), 2);
    assert_eq!(announces_sent(&mut n), vec![(p2.addr, 1), (p3.addr, 1)]);
    // Each tick while disconnected: a round of at most 2 (here both held addresses again).
    let t1 = now + std::time::Duration::from_secs(1);
    n.handle_timer(t1, Timer(TimerKind::AntiEntropy)).unwrap();
    assert_eq!(announces_sent(&mut n), vec![(p2.addr, 1), (p3.addr, 1)]);
    assert_eq!(n.stats().reannounces, 4);
    // A packet addressed to the renewed identity (a join answer) reconnects foca: no more rounds.
    let renewed = n.identity().clone();
    n.handle_message(t1, p2.addr, &feed(&p2, &renewed, &p3)).unwrap();
    assert!(n.reconnect.connected);
    n.handle_timer(
        t1 + std::time::Duration::from_secs(1),
        Timer(TimerKind::AntiEntropy),
    )
    .unwrap();
    assert_eq!(announces_sent(&mut n), vec![]);
    assert_eq!(n.stats().reannounces, 4);
}

/// A renewed node knocks at the addresses where foca holds a live member before any where it holds
/// a dead one, round-robin over them; a second renewal within the anti-entropy interval adds no round.
#[test]
fn re_announces_prefer_live_members_and_renewals_are_rate_limited() {
    use super::membership::REANNOUNCE_FANOUT;
    let k = keys();
    let mut n = node_with(&k, 1);
    let now = Instant::now();
    let me = n.identity().clone();
    let live = [identity(&k, 2, 1), identity(&k, 3, 1), identity(&k, 4, 1)];
    let dead = identity(&k, 5, 1);
    let members = [
        Member::alive(live[1].clone()),
        Member::alive(live[2].clone()),
        Member::down(dead.clone()),
    ];
    let gossip = crate::sim::swim_packet(&live[0], &me, foca::Message::Gossip, &members, &[]);
    n.handle_message(now, live[0].addr, &gossip).unwrap();
    assert_eq!(n.active_members(), 3);
    let held_dead = n
        .foca
        .iter_membership_state()
        .any(|m| m.id() == &dead && m.state() == State::Down);
    assert!(
        held_dead,
        "the dead member must be held for this test to mean anything"
    );
    announces_sent(&mut n);
    let undead = crate::sim::swim_packet(&live[0], &me, foca::Message::TurnUndead, &[], &[]);
    n.handle_message(now, live[0].addr, &undead).unwrap();
    assert!(!n.reconnect.connected);
    let mut knocked: Vec<std::net::SocketAddr> = announces_sent(&mut n).into_iter().map(|(a, _)| a).collect();
    assert_eq!(knocked.len(), REANNOUNCE_FANOUT);
    // A renewal again at once (declared down at its renewed identity too): no extra round.
    let renewed = n.identity().clone();
    let undead = crate::sim::swim_packet(&live[0], &renewed, foca::Message::TurnUndead, &[], &[]);
    n.handle_message(now, live[0].addr, &undead).unwrap();
    assert_eq!(n.identity().renewal, 2);
    assert_eq!(announces_sent(&mut n), vec![]);
    // Ticks: round-robin over the live members' addresses only.
    for t in 1..=3 {
        let at = now + std::time::Duration::from_secs(t);
        n.handle_timer(at, Timer(TimerKind::AntiEntropy)).unwrap();
        knocked.extend(announces_sent(&mut n).into_iter().map(|(a, _)| a));
    }
    assert!(!knocked.contains(&dead.addr), "{knocked:?}");
    for m in &live {
        let times = knocked.iter().filter(|a| **a == m.addr).count();
        assert!(times >= 2, "{} knocked {times} times in {knocked:?}", m.addr);
    }
}
