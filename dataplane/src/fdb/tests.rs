//! Unit tests of the FDB: learning, ageing, moves, precedence, bounds, local-MAC notifications and rows.

use super::*;

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}
fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

#[test]
fn learn_refresh_move_and_age() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Duration::from_secs(300), t0);
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::New);
    assert_eq!(
        f.learn(mac(1), ip(2), Origin::Learned, t0 + Duration::from_secs(200)),
        Learn::Refreshed
    );
    // Refresh pushed expiry out: still there 299 s after the refresh.
    let t = t0 + Duration::from_secs(499);
    assert_eq!(
        f.lookup(&mac(1), t),
        Some(Dest {
            vtep: ip(2),
            origin: Origin::Learned
        })
    );
    assert_eq!(
        f.learn(mac(1), ip(3), Origin::Learned, t),
        Learn::Moved { from: ip(2) }
    );
    assert_eq!(f.lookup(&mac(1), t).map(|d| d.vtep), Some(ip(3)));
    let later = t + Duration::from_secs(300);
    assert_eq!(
        f.lookup(&mac(1), later),
        None,
        "aged entry is invisible before expire()"
    );
    assert_eq!(f.len(), 1);
    assert_eq!(f.expire(later), 1);
    assert!(f.is_empty());
}

#[test]
fn forget_local_gives_up_a_local_entry_to_its_claim_or_removes_it() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    f.learn(mac(1), ip(1), Origin::Local, t0);
    f.learn(mac(2), ip(1), Origin::Local, t0);
    f.learn(mac(3), ip(3), Origin::Learned, t0);
    // A control claim for a local MAC is kept aside.
    f.install_control(mac(2), ip(2), t0);
    let v = f.local_version();
    assert!(f.forget_local(&mac(1), t0));
    assert_eq!(f.lookup(&mac(1), t0), None);
    assert!(f.forget_local(&mac(2), t0));
    assert_eq!(
        f.lookup(&mac(2), t0),
        Some(Dest {
            vtep: ip(2),
            origin: Origin::Control
        })
    );
    assert!(!f.forget_local(&mac(3), t0), "not local: untouched");
    assert!(f.lookup(&mac(3), t0).is_some());
    assert!(!f.forget_local(&mac(9), t0));
    assert_eq!(f.local_count(), 0);
    assert!(f.local_version() > v);
}

#[test]
fn precedence_static_control_learned() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    assert!(f.install_control(mac(1), ip(5), t0));
    assert_eq!(f.learn(mac(1), ip(6), Origin::Learned, t0), Learn::Ignored);
    assert_eq!(
        f.lookup(&mac(1), t0 + Duration::from_secs(10_000))
            .map(|d| d.vtep),
        Some(ip(5))
    );
    // A local sighting beats control: the MAC moved behind our bridge.
    assert_eq!(
        f.learn(mac(1), ip(1), Origin::Local, t0),
        Learn::Moved { from: ip(5) }
    );
    assert!(!f.remove_control(&mac(1)), "only control entries are withdrawn");
    f.insert_static(mac(2), ip(9), t0);
    assert!(!f.install_control(mac(2), ip(5), t0));
    assert_eq!(f.learn(mac(2), ip(6), Origin::Learned, t0), Learn::Ignored);
    assert_eq!(f.lookup(&mac(2), t0).map(|d| d.origin), Some(Origin::Static));
    assert!(f.install_control(mac(3), ip(5), t0));
    assert!(f.remove_control(&mac(3)));
    assert_eq!(f.lookup(&mac(3), t0), None);
}

#[test]
fn bounded() {
    let t0 = Instant::now();
    let f = Fdb::new(2, Fdb::DEFAULT_AGEING, t0);
    assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::New);
    assert_eq!(f.learn(mac(2), ip(2), Origin::Learned, t0), Learn::New);
    // Full of learned entries: the least recently seen one makes room.
    assert_eq!(f.learn(mac(3), ip(2), Origin::Learned, t0), Learn::New);
    assert_eq!(f.lookup(&mac(1), t0), None);
    // Existing entries can still move when full.
    assert_eq!(
        f.learn(mac(2), ip(3), Origin::Learned, t0),
        Learn::Moved { from: ip(2) }
    );
    assert_eq!(f.len(), 2);
}

#[test]
fn local_mac_changes_are_pushed() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Duration::from_secs(10), t0);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    assert!(f.notify_local_changes(move || {
        h.fetch_add(1, Relaxed);
    }));
    assert!(!f.notify_local_changes(|| {}), "one callback only");
    let v0 = f.local_version();
    let local = IpAddr::from([10, 0, 0, 1]);
    f.learn(mac(1), local, Origin::Local, t0);
    assert!(f.local_version() > v0);
    assert_eq!(hits.load(Relaxed), 1);
    // A refresh or a remote MAC changes nothing.
    let v1 = f.local_version();
    f.learn(mac(1), local, Origin::Local, t0);
    f.learn(mac(2), IpAddr::from([10, 0, 0, 2]), Origin::Learned, t0);
    assert_eq!((f.local_version(), hits.load(Relaxed)), (v1, 1));
    // Leaving the bridge and ageing out are changes.
    f.sync_bridge(
        &[],
        local,
        t0 + Duration::from_secs(1),
        t0 + Duration::from_secs(1),
    );
    assert!(f.local_macs(t0).is_empty());
    assert_eq!(hits.load(Relaxed), 2);
    f.learn(mac(3), local, Origin::Local, t0);
    f.expire(t0 + Duration::from_secs(11));
    assert_eq!(hits.load(Relaxed), 4);
}

#[test]
fn rows_and_local_macs() {
    let t0 = Instant::now();
    let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
    f.learn(mac(3), ip(1), Origin::Local, t0);
    f.learn(mac(2), ip(4), Origin::Learned, t0);
    let rows = f.rows(t0 + Duration::from_secs(7));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].mac, mac(2));
    assert_eq!(rows[0].age_s, 7);
    assert_eq!(f.local_macs(t0), vec![mac(3)]);
    let json = serde_json::to_string(&rows[1]).unwrap();
    assert_eq!(
        json,
        r#"{"mac":"02:00:00:00:00:03","vtep":"10.0.0.1","origin":"local","age_s":7}"#
    );
}

/// `overlayctl fdb --watch` relies on this: every change of the rows bumps the version and calls the hook, a
/// refresh (the per-packet case) does neither.
#[test]
fn every_row_change_notifies_and_a_refresh_does_not() {
    use std::sync::atomic::AtomicUsize;
    let t0 = Instant::now();
    let f = Fdb::new(2, Duration::from_secs(300), t0);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    assert!(f.notify_changes(move || {
        c.fetch_add(1, Relaxed);
    }));
    assert!(!f.notify_changes(|| {}), "only the first hook is installed");
    let mut last = (f.version(), calls.load(Relaxed));
    let mut step = |what: &str, expect_change: bool| {
        let now = (f.version(), calls.load(Relaxed));
        assert_eq!(now.0 != last.0, expect_change, "version after {what}");
        assert_eq!(now.1 != last.1, expect_change, "hook after {what}");
        last = now;
    };
    f.learn(mac(1), ip(2), Origin::Learned, t0);
    step("a new learned entry", true);
    f.learn(mac(1), ip(2), Origin::Learned, t0 + Duration::from_secs(1));
    step("a refresh", false);
    f.learn(mac(1), ip(3), Origin::Learned, t0 + Duration::from_secs(2));
    step("a move", true);
    assert!(f.install_control(mac(1), ip(4), t0 + Duration::from_secs(3)));
    step("a control install over a learned entry", true);
    assert!(f.install_control(mac(1), ip(4), t0 + Duration::from_secs(3)));
    step("the same install again", false);
    assert!(f.remove_control(&mac(1)));
    step("a withdrawal", true);
    f.learn(mac(5), ip(1), Origin::Local, t0);
    step("a new local entry", true);
    f.learn(mac(6), ip(2), Origin::Learned, t0);
    f.learn(mac(7), ip(2), Origin::Learned, t0);
    step("an eviction to make room", true);
    assert!(f.forget_local(&mac(5), t0));
    step("a local entry given up", true);
    f.insert_static(mac(8), ip(9), t0);
    step("a static entry", true);
    assert!(f.expire(t0 + Duration::from_secs(400)) > 0);
    step("an expiry", true);
    assert_eq!(f.expire(t0 + Duration::from_secs(401)), 0);
    step("an expiry that removed nothing", false);
}
