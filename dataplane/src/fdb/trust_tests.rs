//! Who may move a MAC (issue 8 "Trust" §1 and §6): learned vs local vs control, the bridge as the source of
//! truth for `local`, and dampening, all in virtual time.

use super::*;

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}
fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}
const ME: u8 = 1;
fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
fn at(f: &Fdb, m: u8, now: Instant) -> Option<(IpAddr, Origin)> {
    f.lookup(&mac(m), now).map(|d| (d.vtep, d.origin))
}
fn flaps(f: &Fdb) -> u64 {
    f.counters().mac_flaps.load(Relaxed)
}

#[test]
fn learned_never_overwrites_local_or_control() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    f.learn(mac(1), ip(ME), Origin::Local, t0);
    assert_eq!(f.learn(mac(1), ip(9), Origin::Learned, t0), Learn::OwnedLocally);
    assert_eq!(at(&f, 1, t0), Some((ip(ME), Origin::Local)));
    assert!(f.install_control(mac(2), ip(5), t0));
    assert_eq!(f.learn(mac(2), ip(9), Origin::Learned, t0), Learn::Ignored);
    assert_eq!(f.learn(mac(2), ip(5), Origin::Learned, t0), Learn::Ignored);
    assert_eq!(at(&f, 2, t0), Some((ip(5), Origin::Control)));
    // Later sightings too: the local entry stays until the MAC leaves our bridge.
    assert_eq!(
        f.learn(mac(1), ip(ME), Origin::Local, t0 + secs(1)),
        Learn::Refreshed
    );
    assert_eq!(
        f.learn(mac(1), ip(9), Origin::Learned, t0 + secs(2)),
        Learn::OwnedLocally
    );
    assert_eq!(flaps(&f), 0);
}

#[test]
fn control_claim_for_a_local_mac_waits_until_it_leaves_the_bridge() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    f.learn(mac(1), ip(ME), Origin::Local, t0);
    assert!(!f.install_control(mac(1), ip(5), t0), "local beats control");
    assert_eq!(at(&f, 1, t0), Some((ip(ME), Origin::Local)));
    // Still on the bridge: stays local.
    let t1 = t0 + secs(1);
    assert_eq!(f.sync_bridge(&[(mac(1), true)], ip(ME), t1, t1), 0);
    assert_eq!(at(&f, 1, t1), Some((ip(ME), Origin::Local)));
    // Gone from the bridge: the remote claim wins.
    let t2 = t0 + secs(2);
    assert_eq!(f.sync_bridge(&[], ip(ME), t2, t2), 1);
    assert_eq!(at(&f, 1, t2), Some((ip(5), Origin::Control)));

    // A withdrawn claim is forgotten: leaving the bridge then removes the entry.
    f.learn(mac(3), ip(ME), Origin::Local, t2);
    assert!(!f.install_control(mac(3), ip(5), t2));
    assert!(!f.remove_control(&mac(3)), "the local entry itself stays");
    let t3 = t0 + secs(3);
    assert_eq!(f.sync_bridge(&[], ip(ME), t3, t3), 1);
    assert_eq!(at(&f, 3, t3), None);
}

#[test]
fn a_mac_arriving_on_our_bridge_keeps_the_control_claim_for_later() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    assert!(f.install_control(mac(4), ip(5), t0));
    assert_eq!(
        f.learn(mac(4), ip(ME), Origin::Local, t0),
        Learn::Moved { from: ip(5) }
    );
    let t1 = t0 + secs(1);
    assert_eq!(f.sync_bridge(&[], ip(ME), t1, t1), 1);
    assert_eq!(at(&f, 4, t1), Some((ip(5), Origin::Control)));
}

#[test]
fn local_entry_leaves_only_when_the_bridge_lost_it() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    f.learn(mac(1), ip(ME), Origin::Local, t0);
    // The bridge table was read before the TAP showed the MAC: no verdict on it yet.
    let read_at = t0;
    let t1 = t0 + secs(1);
    f.learn(mac(1), ip(ME), Origin::Local, t1);
    assert_eq!(f.sync_bridge(&[], ip(ME), read_at, t1), 0);
    assert_eq!(at(&f, 1, t1).map(|x| x.1), Some(Origin::Local));
    // Read after the last sighting and not there: gone; a remote sighting is now a move like any other.
    let t2 = t0 + secs(2);
    assert_eq!(f.sync_bridge(&[], ip(ME), t2, t2), 1);
    assert_eq!(at(&f, 1, t2), None);
    assert_eq!(f.learn(mac(1), ip(7), Origin::Learned, t2), Learn::New);
    // Announced by the bridge (a quiet container the TAP never saw): local at once, spoofing refused.
    assert_eq!(
        f.sync_bridge(&[(mac(1), true), (mac(2), true), (mac(3), false)], ip(ME), t2, t2),
        0
    );
    assert_eq!(at(&f, 1, t2), Some((ip(ME), Origin::Local)));
    assert_eq!(at(&f, 2, t2), Some((ip(ME), Origin::Local)));
    assert_eq!(
        at(&f, 3, t2),
        None,
        "the bridge's own addresses are not announced"
    );
    assert_eq!(f.learn(mac(2), ip(7), Origin::Learned, t2), Learn::OwnedLocally);
}

#[test]
fn learned_mac_flapping_is_frozen_then_released_after_the_window() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::New);
    let owner = |i: u64| if i % 2 == 0 { ip(2) } else { ip(3) };
    // Moves 1..=5 (t0+1 s .. t0+5 s) are allowed: "more than 5 times in 180 s" is the threshold.
    for i in 1..=5u64 {
        let l = f.learn(mac(1), owner(i), Origin::Learned, t0 + secs(i));
        assert_eq!(l, Learn::Moved { from: owner(i - 1) }, "move {i}");
    }
    let frozen_at = owner(5);
    for i in 6..=20u64 {
        let now = t0 + secs(i);
        let l = f.learn(mac(1), owner(i), Origin::Learned, now);
        let want = if owner(i) == frozen_at {
            Learn::Refreshed
        } else {
            Learn::Dampened
        };
        assert_eq!(l, want, "sighting {i}");
        assert_eq!(at(&f, 1, now).map(|x| x.0), Some(frozen_at));
    }
    assert_eq!(
        flaps(&f),
        8,
        "every refused move is counted (sightings 6, 8, …, 20)"
    );
    // The window opened with the first move (t0+1 s); at t0+181 s it has closed.
    let late = t0 + secs(180);
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, late), Learn::Dampened);
    let open = t0 + secs(181);
    assert_eq!(
        f.learn(mac(1), ip(2), Origin::Learned, open),
        Learn::Moved { from: frozen_at }
    );
    assert_eq!(flaps(&f), 9);
}

#[test]
fn control_installs_are_dampened_and_the_last_claim_applies_after_the_window() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    assert!(f.install_control(mac(1), ip(2), t0));
    let owner = |i: u64| if i % 2 == 0 { ip(2) } else { ip(3) };
    for i in 1..=5u64 {
        assert!(f.install_control(mac(1), owner(i), t0 + secs(i)), "move {i}");
    }
    assert!(
        !f.install_control(mac(1), owner(6), t0 + secs(6)),
        "6th move refused"
    );
    assert_eq!(at(&f, 1, t0 + secs(6)), Some((owner(5), Origin::Control)));
    assert_eq!(flaps(&f), 1);
    // Back to the current owner: accepted, nothing pending any more.
    assert!(f.install_control(mac(1), owner(5), t0 + secs(7)));
    assert!(!f.install_control(mac(1), owner(6), t0 + secs(8)));
    assert_eq!(flaps(&f), 2);
    // expire() inside the window changes nothing; after it, the pending claim is applied.
    assert_eq!(f.expire(t0 + secs(100)), 0);
    assert_eq!(at(&f, 1, t0 + secs(100)).map(|x| x.0), Some(owner(5)));
    assert_eq!(f.expire(t0 + secs(181)), 0);
    assert_eq!(at(&f, 1, t0 + secs(181)), Some((owner(6), Origin::Control)));
    // A learned sighting cannot bypass the control entry either.
    assert_eq!(
        f.learn(mac(1), owner(5), Origin::Learned, t0 + secs(182)),
        Learn::Ignored
    );
}

#[test]
fn a_control_install_over_a_frozen_learned_entry_is_dampened_too() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0).with_damping(Damping {
        max_moves: 1,
        window: secs(10),
    });
    f.learn(mac(1), ip(2), Origin::Learned, t0);
    assert_eq!(
        f.learn(mac(1), ip(3), Origin::Learned, t0),
        Learn::Moved { from: ip(2) }
    );
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::Dampened);
    assert!(!f.install_control(mac(1), ip(2), t0));
    assert!(
        f.install_control(mac(1), ip(3), t0),
        "same owner: becomes control"
    );
    assert_eq!(at(&f, 1, t0), Some((ip(3), Origin::Control)));
    assert_eq!(flaps(&f), 2);
}

#[test]
fn our_own_bridge_is_never_frozen_out() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0).with_damping(Damping {
        max_moves: 1,
        window: secs(100),
    });
    f.learn(mac(1), ip(2), Origin::Learned, t0);
    f.learn(mac(1), ip(3), Origin::Learned, t0);
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::Dampened);
    // The container really is here now: the move happens regardless.
    assert_eq!(
        f.learn(mac(1), ip(ME), Origin::Local, t0),
        Learn::Moved { from: ip(3) }
    );
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::OwnedLocally);
}

#[test]
fn an_aged_local_entry_falls_back_to_its_control_claim() {
    let t0 = Instant::now();
    let f = Fdb::new(16, secs(60), t0);
    f.learn(mac(1), ip(ME), Origin::Local, t0);
    assert!(!f.install_control(mac(1), ip(5), t0));
    f.learn(mac(2), ip(ME), Origin::Local, t0);
    assert_eq!(
        f.expire(t0 + secs(61)),
        1,
        "only the entry without a claim is removed"
    );
    assert_eq!(at(&f, 1, t0 + secs(61)), Some((ip(5), Origin::Control)));
    assert_eq!(at(&f, 2, t0 + secs(61)), None);
}

#[test]
fn static_entries_stay_put() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    f.insert_static(mac(1), ip(9), t0);
    assert_eq!(f.learn(mac(1), ip(ME), Origin::Local, t0), Learn::Ignored);
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::Ignored);
    assert!(!f.install_control(mac(1), ip(2), t0));
    assert_eq!(at(&f, 1, t0), Some((ip(9), Origin::Static)));
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Learned(u8),
    Control(u8),
    RemoveControl,
    Local,
    /// The bridge table read: is the MAC on a non-TAP port?
    Bridge(bool),
    Expire,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (2u8..5).prop_map(Op::Learned),
        3 => (2u8..5).prop_map(Op::Control),
        1 => Just(Op::RemoveControl),
        1 => Just(Op::Local),
        1 => any::<bool>().prop_map(Op::Bridge),
        1 => Just(Op::Expire),
    ]
}

fn apply(f: &Fdb, op: Op, now: Instant) {
    match op {
        Op::Learned(v) => {
            f.learn(mac(1), ip(v), Origin::Learned, now);
        }
        Op::Control(v) => {
            f.install_control(mac(1), ip(v), now);
        }
        Op::RemoveControl => {
            f.remove_control(&mac(1));
        }
        Op::Local => {
            f.learn(mac(1), ip(ME), Origin::Local, now);
        }
        Op::Bridge(present) => {
            let on: &[(MacAddr, bool)] = if present { &[(mac(1), true)] } else { &[] };
            f.sync_bridge(on, ip(ME), now, now);
        }
        Op::Expire => {
            f.expire(now);
        }
    }
}

proptest::proptest! {
    /// Whatever happens before, a datagram's sighting never displaces a local, control or static entry.
    #[test]
    fn a_sighting_never_displaces_local_or_control(
        ops in proptest::collection::vec((op(), 0u64..400), 1..80),
    ) {
        let t0 = Instant::now();
        let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
        let mut now = t0;
        for (op, dt) in ops {
            now += secs(dt);
            let before = at(&f, 1, now);
            apply(&f, op, now);
            if let (Op::Learned(_), Some((_, o))) = (op, before) {
                if o != Origin::Learned {
                    proptest::prop_assert_eq!(at(&f, 1, now), before);
                }
            }
        }
    }

    /// Remote claims only (learned and control): the owner changes at most 5 times in the first 180 s after
    /// its first change, and never more than 10 times (two windows) in any 180 s.
    #[test]
    fn remote_owner_changes_are_bounded(
        ops in proptest::collection::vec((op(), 0u64..60), 1..200),
    ) {
        let t0 = Instant::now();
        let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
        let mut now = t0;
        let mut owner = None;
        let mut changes: Vec<Instant> = Vec::new();
        for (op, dt) in ops {
            if matches!(op, Op::Local | Op::Bridge(_) | Op::RemoveControl) {
                continue; // forced moves and withdrawals are not dampened
            }
            now += secs(dt);
            apply(&f, op, now);
            let o = at(&f, 1, now).map(|x| x.0);
            if let (Some(a), Some(b)) = (owner, o) {
                if a != b {
                    changes.push(now);
                }
            }
            if o.is_some() {
                owner = o;
            }
        }
        let window = Damping::DEFAULT_WINDOW;
        if let Some(first) = changes.first() {
            let n = changes.iter().filter(|t| **t < *first + window).count();
            proptest::prop_assert!(n <= 5, "{n} changes in the first window: {changes:?}");
        }
        for t in &changes {
            let n = changes.iter().filter(|u| **u >= *t && **u < *t + window).count();
            proptest::prop_assert!(n <= 10, "{n} changes within 180 s");
        }
    }
}
