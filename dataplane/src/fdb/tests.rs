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
