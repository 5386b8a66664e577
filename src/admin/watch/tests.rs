//! The change feed without HTTP: ordering, the hook, back-off, unchanged tables, the ring.

use super::*;
use dataplane::fdb::Fdb;
use dataplane::network::Network;
use dataplane::wire::Vni;

fn table() -> (Arc<NetworkTable>, Arc<Fdb>) {
    let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now()));
    let net = Arc::new(Network::new(
        "default",
        Vni::new(42).unwrap(),
        fdb.clone(),
        Arc::default(),
    ));
    (Arc::new(NetworkTable::new([net]).unwrap()), fdb)
}

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

#[test]
fn baseline_then_add_update_remove_in_order_with_the_change_time() {
    let (t, fdb) = table();
    let vtep = IpAddr::from([10, 0, 0, 2]);
    fdb.install_control(mac(1), vtep, Instant::now());
    let w = FdbWatch::new(t);
    let mut s = w.subscribe(Listener::Tcp).unwrap();
    assert_eq!(s.baseline.len(), 1);
    assert_eq!(
        (s.baseline[0].event, s.baseline[0].mac),
        (Change::Present, mac(1))
    );
    let before = unix_us();
    fdb.install_control(mac(2), vtep, Instant::now());
    fdb.install_control(mac(1), IpAddr::from([10, 0, 0, 3]), Instant::now());
    w.pass();
    fdb.remove_control(&mac(2));
    w.pass();
    let ev: Vec<FdbEvent> = std::iter::from_fn(|| s.rx.try_recv().ok()).collect();
    let got: Vec<(Change, MacAddr, u64)> = ev.iter().map(|e| (e.event, e.mac, e.seq)).collect();
    assert_eq!(
        got,
        [
            (Change::Update, mac(1), s.seq + 1),
            (Change::Add, mac(2), s.seq + 2),
            (Change::Remove, mac(2), s.seq + 3)
        ]
    );
    assert_eq!(ev[0].vtep, IpAddr::from([10, 0, 0, 3]));
    assert!(ev.iter().all(|e| e.ts_us >= before && e.ts_us <= unix_us()));
    assert_eq!((&*ev[0].network, ev[0].vni), ("default", 42));
}

#[test]
fn nobody_watching_stops_the_hook_and_the_watcher_cap_holds() {
    let (t, fdb) = table();
    let w = FdbWatch::new(t);
    assert!(!w.hook.active.load(Relaxed));
    fdb.install_control(mac(1), IpAddr::from([10, 0, 0, 2]), Instant::now());
    assert_eq!(
        w.hook.pending_us.load(Relaxed),
        0,
        "inactive: the hook did nothing"
    );
    let subs: Vec<Subscription> = (0..MAX_TCP_WATCHERS)
        .map(|_| w.subscribe(Listener::Tcp).unwrap())
        .collect();
    assert!(
        w.subscribe(Listener::Tcp).is_none(),
        "one more than the TCP cap is refused"
    );
    let sock = w.subscribe(Listener::Socket);
    assert!(sock.is_some(), "the socket has its own places");
    fdb.install_control(mac(2), IpAddr::from([10, 0, 0, 2]), Instant::now());
    assert_ne!(w.hook.pending_us.load(Relaxed), 0, "active: the change is noted");
    drop((subs, sock));
    w.pass();
    assert!(
        !w.hook.active.load(Relaxed),
        "the last reader gone: the hook idles"
    );
    assert!(
        w.feed.lock().unwrap().nets.is_empty(),
        "and the feed forgets the table"
    );
    let again: Vec<Subscription> = (0..MAX_TCP_WATCHERS)
        .map(|_| w.subscribe(Listener::Tcp).unwrap())
        .collect();
    assert_eq!(again.len(), MAX_TCP_WATCHERS, "slots are given back");
    assert_eq!(again[0].baseline.len(), 2, "an idle feed reads the tables afresh");
}

#[test]
fn reads_back_off_to_four_times_their_duration() {
    assert_eq!(gap_after(Duration::ZERO), MIN_GAP);
    assert_eq!(gap_after(Duration::from_millis(32)), Duration::from_millis(128));
    assert_eq!(gap_after(Duration::MAX), Duration::MAX);
}

#[test]
fn a_table_that_did_not_change_is_not_read_again() {
    let a = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now()));
    let b = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now()));
    let net = |name: &str, vni: u32, fdb: &Arc<Fdb>| {
        Arc::new(Network::new(
            name,
            Vni::new(vni).unwrap(),
            fdb.clone(),
            Arc::default(),
        ))
    };
    let t = Arc::new(NetworkTable::new([net("a", 1, &a), net("b", 2, &b)]).unwrap());
    let vtep = IpAddr::from([10, 0, 0, 2]);
    for m in 1..=10 {
        a.install_control(mac(m), vtep, Instant::now());
        b.install_control(mac(m), vtep, Instant::now());
    }
    let w = FdbWatch::new(t);
    let mut s = w.subscribe(Listener::Tcp).unwrap();
    assert_eq!(s.baseline.len(), 20);
    let read = || w.feed.lock().unwrap().rows_read;
    assert_eq!(read(), 20);
    w.pass();
    w.pass();
    assert_eq!(read(), 20, "no change: no table read");
    b.install_control(mac(11), vtep, Instant::now());
    w.pass();
    assert_eq!(read(), 31, "only the table that changed is read");
    let ev: Vec<FdbEvent> = std::iter::from_fn(|| s.rx.try_recv().ok()).collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0].event, &*ev[0].network, ev[0].mac),
        (Change::Add, "b", mac(11))
    );
    // A second reader of an active feed gets its baseline from the feed's copy, not the tables.
    let s2 = w.subscribe(Listener::Socket).unwrap();
    assert_eq!((s2.baseline.len(), s2.seq), (21, ev[0].seq));
    assert_eq!(read(), 31);
}

#[test]
fn a_reader_behind_by_more_than_the_ring_is_told_and_gets_a_fresh_baseline() {
    let (t, fdb) = table();
    let w = FdbWatch::with_ring(t, 4);
    let mut s = w.subscribe(Listener::Tcp).unwrap();
    for m in 1..=10 {
        fdb.install_control(mac(m), IpAddr::from([10, 0, 0, 2]), Instant::now());
        w.pass();
    }
    match s.rx.try_recv() {
        Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 6),
        other => panic!("expected lost events, got {other:?}"),
    }
    let read = w.feed.lock().unwrap().rows_read;
    let s = w.resync(s);
    assert_eq!(w.feed.lock().unwrap().rows_read, read, "resync reads no table");
    assert_eq!(s.baseline.len(), 10, "the new baseline holds every row");
    assert_eq!(s.seq, 10);
}
