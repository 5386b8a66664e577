//! Floods (issue 9 §4) in virtual time: the local-MAC cap (TAP sightings and bridge syncs) and eviction of
//! the least recently seen learned entry from a full table, never of a local or control one.

use super::*;
use proptest::prelude::*;

fn mac(n: u16) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([2, 0, 0, 0, b[0], b[1]])
}
fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}
const ME: u8 = 1;
fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
fn capped(f: &Fdb) -> u64 {
    f.counters().local_mac_cap.load(Relaxed)
}
fn evictions(f: &Fdb) -> u64 {
    f.counters().fdb_evictions.load(Relaxed)
}
/// Entries with origin local, aged or not, counted the slow way.
fn locals_in_map(f: &Fdb) -> usize {
    f.map.iter().filter(|e| e.origin == Origin::Local).count()
}

#[test]
fn local_macs_are_capped_and_counted() {
    let t0 = Instant::now();
    let f = Fdb::new(64, Fdb::DEFAULT_AGEING, t0).with_max_local(3);
    for m in 1..=3 {
        assert_eq!(f.learn(mac(m), ip(ME), Origin::Local, t0), Learn::New);
    }
    for m in 4..=9 {
        assert_eq!(f.learn(mac(m), ip(ME), Origin::Local, t0), Learn::LocalCap);
        assert_eq!(f.lookup(&mac(m), t0), None, "a refused MAC is not learned");
    }
    assert_eq!(capped(&f), 0, "counted per MAC by the bridge sync, not per frame");
    assert_eq!(f.local_macs(t0), vec![mac(1), mac(2), mac(3)], "nor advertised");
    // Local MACs already in keep refreshing; a refused one is refused again.
    assert_eq!(
        f.learn(mac(2), ip(ME), Origin::Local, t0 + secs(1)),
        Learn::Refreshed
    );
    assert_eq!(
        f.learn(mac(4), ip(ME), Origin::Local, t0 + secs(1)),
        Learn::LocalCap
    );
    // A MAC learned from a remote VTEP that shows up on our bridge is a new local MAC: refused too, and the
    // learned entry stays.
    assert_eq!(f.learn(mac(20), ip(5), Origin::Learned, t0), Learn::New);
    assert_eq!(f.learn(mac(20), ip(ME), Origin::Local, t0), Learn::LocalCap);
    assert_eq!(f.lookup(&mac(20), t0).map(|d| d.origin), Some(Origin::Learned));
    // A control entry likewise.
    assert!(f.install_control(mac(21), ip(5), t0));
    assert_eq!(f.learn(mac(21), ip(ME), Origin::Local, t0), Learn::LocalCap);
    assert_eq!(f.lookup(&mac(21), t0).map(|d| d.origin), Some(Origin::Control));
    assert_eq!(f.local_count(), 3);
    assert_eq!(locals_in_map(&f), 3);
    // A refused MAC is not protected as local: a remote sighting of it is learned like any other.
    assert_eq!(f.learn(mac(5), ip(5), Origin::Learned, t0), Learn::New);
}

#[test]
fn places_come_back_when_local_macs_leave() {
    let t0 = Instant::now();
    let f = Fdb::new(64, secs(300), t0).with_max_local(2);
    f.learn(mac(1), ip(ME), Origin::Local, t0);
    f.learn(mac(2), ip(ME), Origin::Local, t0);
    assert_eq!(f.learn(mac(3), ip(ME), Origin::Local, t0), Learn::LocalCap);
    // mac 1 leaves the bridge: its place goes to mac 3.
    let t1 = t0 + secs(5);
    assert_eq!(f.sync_bridge(&[(mac(2), true)], ip(ME), t1, t1), 1);
    assert_eq!(f.local_count(), 1);
    assert_eq!(f.learn(mac(3), ip(ME), Origin::Local, t1), Learn::New);
    // A static entry over a local one frees its place.
    f.insert_static(mac(2), ip(7), t1);
    assert_eq!(f.local_count(), 1);
    assert_eq!(f.learn(mac(4), ip(ME), Origin::Local, t1), Learn::New);
    // A local entry that ages out frees its place when expired, or when overwritten by a remote sighting.
    let t2 = t1 + secs(301);
    assert_eq!(f.learn(mac(3), ip(5), Origin::Learned, t2), Learn::New);
    assert_eq!(f.local_count(), 1);
    assert_eq!(f.expire(t2), 1);
    assert_eq!(f.local_count(), 0);
    // An aged local entry with a pending control claim becomes control: its place is freed too.
    f.learn(mac(5), ip(ME), Origin::Local, t2);
    assert!(!f.install_control(mac(5), ip(6), t2));
    assert_eq!(f.local_count(), 1);
    let t3 = t2 + secs(301);
    f.expire(t3);
    assert_eq!(f.lookup(&mac(5), t3).map(|d| d.origin), Some(Origin::Control));
    assert_eq!(f.local_count(), 0);
    assert_eq!(locals_in_map(&f), 0);
}

#[test]
fn bridge_sync_respects_the_cap_and_counts_each_refused_mac_once() {
    let t0 = Instant::now();
    let f = Fdb::new(64, Fdb::DEFAULT_AGEING, t0).with_max_local(4);
    let bridge: Vec<(MacAddr, bool)> = (1..=10).map(|m| (mac(m), true)).collect();
    f.sync_bridge(&bridge, ip(ME), t0, t0);
    assert_eq!(f.local_count(), 4);
    assert_eq!(f.local_macs(t0).len(), 4);
    assert_eq!(capped(&f), 6);
    // The same table a second later: the same MACs refused, not counted again.
    let t1 = t0 + secs(1);
    f.sync_bridge(&bridge, ip(ME), t1, t1);
    assert_eq!(capped(&f), 6);
    assert_eq!(f.local_count(), 4);
    // Two more on the bridge, and two refused ones gone: two more counted.
    let more: Vec<(MacAddr, bool)> = (1..=8).chain(11..=12).map(|m| (mac(m), true)).collect();
    let t2 = t0 + secs(2);
    f.sync_bridge(&more, ip(ME), t2, t2);
    assert_eq!(capped(&f), 8);
    assert_eq!(f.local_count(), 4);
    // Permanent (not announced) addresses never take a place.
    let t3 = t0 + secs(3);
    let perm: Vec<(MacAddr, bool)> = (100..110).map(|m| (mac(m), false)).collect();
    f.sync_bridge(&perm, ip(ME), t3, t3);
    assert_eq!(f.local_count(), 0, "everything left the bridge");
    assert_eq!(locals_in_map(&f), 0);
}

#[test]
fn full_table_evicts_the_least_recently_seen_learned_entry() {
    let t0 = Instant::now();
    let f = Fdb::new(4, Fdb::DEFAULT_AGEING, t0);
    for m in 1..=4u16 {
        assert_eq!(
            f.learn(mac(m), ip(5), Origin::Learned, t0 + secs(u64::from(m))),
            Learn::New
        );
    }
    // mac 1 is used again: mac 2 is now the least recently seen.
    f.learn(mac(1), ip(5), Origin::Learned, t0 + secs(10));
    assert_eq!(f.learn(mac(5), ip(6), Origin::Learned, t0 + secs(11)), Learn::New);
    assert_eq!(f.lookup(&mac(2), t0 + secs(11)), None);
    assert_eq!(f.learn(mac(6), ip(6), Origin::Learned, t0 + secs(12)), Learn::New);
    assert_eq!(f.lookup(&mac(3), t0 + secs(12)), None);
    assert_eq!(f.learn(mac(7), ip(6), Origin::Learned, t0 + secs(13)), Learn::New);
    assert_eq!(f.lookup(&mac(4), t0 + secs(13)), None);
    // Now mac 1 (seen at 10) is the oldest.
    assert_eq!(f.learn(mac(8), ip(6), Origin::Learned, t0 + secs(14)), Learn::New);
    assert_eq!(f.lookup(&mac(1), t0 + secs(14)), None);
    assert_eq!(f.len(), 4);
    assert_eq!(evictions(&f), 4);
    // The control plane and our bridge make room the same way.
    assert!(f.install_control(mac(9), ip(7), t0 + secs(15)));
    assert_eq!(f.learn(mac(10), ip(ME), Origin::Local, t0 + secs(15)), Learn::New);
    assert_eq!(f.lookup(&mac(5), t0 + secs(15)), None);
    assert_eq!(f.lookup(&mac(6), t0 + secs(15)), None);
    assert_eq!(f.len(), 4);
}

#[test]
fn local_control_and_static_entries_are_never_evicted() {
    let t0 = Instant::now();
    let f = Fdb::new(4, Fdb::DEFAULT_AGEING, t0);
    f.learn(mac(1), ip(ME), Origin::Local, t0);
    assert!(f.install_control(mac(2), ip(5), t0));
    f.insert_static(mac(3), ip(6), t0);
    f.learn(mac(4), ip(7), Origin::Learned, t0);
    // Only the learned entry can go, however recently it was seen.
    let t1 = t0 + secs(100);
    assert_eq!(f.learn(mac(5), ip(7), Origin::Learned, t1), Learn::New);
    assert_eq!(f.lookup(&mac(4), t1), None);
    assert_eq!(f.learn(mac(6), ip(7), Origin::Learned, t1), Learn::New);
    assert_eq!(f.lookup(&mac(5), t1), None);
    // No learned entry at all: refused.
    assert!(f.remove_control(&mac(2)));
    assert!(f.install_control(mac(2), ip(5), t1));
    assert_eq!(f.learn(mac(7), ip(ME), Origin::Local, t1), Learn::New);
    assert_eq!(f.learn(mac(8), ip(7), Origin::Learned, t1), Learn::Full);
    assert!(!f.install_control(mac(9), ip(5), t1));
    for m in [1, 7] {
        assert_eq!(f.lookup(&mac(m), t1).map(|d| d.origin), Some(Origin::Local));
    }
    assert_eq!(f.lookup(&mac(2), t1).map(|d| d.origin), Some(Origin::Control));
    assert_eq!(f.lookup(&mac(3), t1).map(|d| d.origin), Some(Origin::Static));
}

#[test]
fn a_flood_of_learned_macs_leaves_recently_used_ones() {
    // Beyond the sample size the choice is approximate; an entry in steady use still survives a flood.
    let t0 = Instant::now();
    let f = Fdb::new(256, Fdb::DEFAULT_AGEING, t0);
    let legit = mac(0xffff);
    f.learn(legit, ip(9), Origin::Learned, t0);
    for i in 0..20_000u16 {
        let t = t0 + Duration::from_millis(u64::from(i));
        f.learn(mac(i), ip(5), Origin::Learned, t);
        if i % 16 == 0 {
            f.learn(legit, ip(9), Origin::Learned, t);
        }
        assert!(f.len() <= 256);
    }
    let end = t0 + secs(20);
    assert_eq!(f.lookup(&legit, end).map(|d| d.vtep), Some(ip(9)));
    assert!(evictions(&f) >= 20_000 - 256);
    assert!(f.hints.len() <= 512, "hints stay bounded: {}", f.hints.len());
}

#[derive(Clone, Debug)]
enum Op {
    Learned(u16),
    Local(u16),
    Control(u16),
    Withdraw(u16),
    Tick(u64),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..64).prop_map(Op::Learned),
        2 => (0u16..64).prop_map(Op::Local),
        2 => (0u16..64).prop_map(Op::Control),
        1 => (0u16..64).prop_map(Op::Withdraw),
        1 => (0u64..5).prop_map(Op::Tick),
        1 => Just(Op::Expire),
    ]
}

proptest! {
    /// Whatever happens, a local or control entry leaves only by an operation on that MAC (never to make
    /// room), the table stays within its capacity and the local cap, and the local count is exact.
    #[test]
    fn local_and_control_entries_are_never_evicted(ops in proptest::collection::vec(op(), 1..300)) {
        let t0 = Instant::now();
        let mut now = t0;
        // Ageing longer than any run: entries leave only by eviction or withdrawal.
        let f = Fdb::new(8, secs(10_000), t0).with_max_local(3);
        let snapshot = |f: &Fdb| -> Vec<(MacAddr, Origin)> {
            let mut v: Vec<_> = f
                .map
                .iter()
                .filter(|e| matches!(e.origin, Origin::Local | Origin::Control))
                .map(|e| (*e.key(), e.origin))
                .collect();
            v.sort();
            v
        };
        for op in ops {
            let before = snapshot(&f);
            let touched = match op {
                Op::Learned(m) => { f.learn(mac(m), ip(5 + (m % 3) as u8), Origin::Learned, now); None }
                Op::Local(m) => { f.learn(mac(m), ip(ME), Origin::Local, now); Some(mac(m)) }
                Op::Control(m) => { f.install_control(mac(m), ip(5 + (m % 3) as u8), now); Some(mac(m)) }
                Op::Withdraw(m) => { f.remove_control(&mac(m)); Some(mac(m)) }
                Op::Tick(s) => { now += secs(s); None }
                Op::Expire => { f.expire(now); None }
            };
            let after = snapshot(&f);
            for (m, o) in &before {
                if Some(*m) != touched {
                    prop_assert!(after.contains(&(*m, *o)), "{m} ({o:?}) vanished or changed on {op:?}");
                }
            }
            prop_assert!(f.len() <= 8, "len {}", f.len());
            prop_assert_eq!(f.local_count(), locals_in_map(&f));
            prop_assert!(f.local_count() <= 3);
        }
    }
}
