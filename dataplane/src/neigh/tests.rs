use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}
fn ip(n: u16) -> IpAddr {
    let b = n.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, 20, b[0], b[1]))
}
fn b(i: u16, m: u8) -> Binding {
    Binding {
        ip: ip(i),
        mac: mac(m),
    }
}
const S: Duration = Duration::from_secs(1);

#[test]
fn learn_install_lookup_and_precedence() {
    let t0 = Instant::now();
    let t = NeighTable::new(16, t0);
    assert_eq!(t.install(b(1, 1), t0), Insert::New);
    assert_eq!(t.lookup(&ip(1)), Some((mac(1), NeighOrigin::Control)));
    assert_eq!(t.install(b(1, 1), t0), Insert::Refreshed);
    // Another host re-advertises the address with another MAC: the newer advert wins.
    assert_eq!(
        t.install(b(1, 2), t0),
        Insert::Changed {
            from: mac(1),
            origin: NeighOrigin::Control
        }
    );
    assert_eq!(t.local_version(), 0, "control changes do not touch the local set");
    // Seen on our bridge: local beats control.
    assert_eq!(
        t.learn(b(1, 3), t0),
        Insert::Changed {
            from: mac(2),
            origin: NeighOrigin::Control
        }
    );
    assert_eq!(t.lookup(&ip(1)), Some((mac(3), NeighOrigin::Local)));
    assert_eq!(t.local_version(), 1);
    assert_eq!(t.learn(b(1, 3), t0 + S), Insert::Refreshed);
    assert_eq!(t.local_version(), 1, "a refresh is not a change");
    // A remote claim for a fresh local binding is refused; once the local one went stale it wins.
    assert_eq!(t.install(b(1, 4), t0 + 299 * S), Insert::OwnedLocally);
    assert_eq!(t.lookup(&ip(1)), Some((mac(3), NeighOrigin::Local)));
    assert_eq!(
        t.install(b(1, 4), t0 + 301 * S),
        Insert::Changed {
            from: mac(3),
            origin: NeighOrigin::Local
        }
    );
    assert_eq!(t.lookup(&ip(1)), Some((mac(4), NeighOrigin::Control)));
    assert_eq!(t.local_version(), 2);
    // Removal: control only by the control plane's withdrawals.
    assert!(t.remove_control(&ip(1)));
    assert!(!t.remove_control(&ip(1)));
    assert_eq!(t.lookup(&ip(1)), None);
    t.learn(b(2, 5), t0);
    assert!(
        !t.remove_control(&ip(2)),
        "a local binding is not the control plane's"
    );
    assert_eq!(t.remove_mac(&mac(5)), 1);
    assert!(t.is_empty());
}

#[test]
fn control_claims_wait_beside_local_bindings() {
    let t0 = Instant::now();
    let t = NeighTable::new(16, t0);
    // A local container takes over an address another host advertised; when it leaves, the advert is back.
    t.install(b(1, 1), t0);
    t.learn(b(1, 3), t0);
    assert_eq!(t.remove_mac(&mac(3)), 1);
    assert_eq!(t.lookup(&ip(1)), Some((mac(1), NeighOrigin::Control)));
    // An advert for a fresh local address is refused but remembered (the latest one).
    t.learn(b(2, 5), t0);
    assert_eq!(t.install(b(2, 6), t0), Insert::OwnedLocally);
    assert_eq!(t.install(b(2, 7), t0), Insert::OwnedLocally);
    assert_eq!(t.learn(b(2, 5), t0 + S), Insert::Refreshed);
    assert_eq!(t.lookup(&ip(2)), Some((mac(5), NeighOrigin::Local)));
    let v = t.local_version();
    assert_eq!(t.remove_mac(&mac(5)), 1);
    assert_eq!(t.local_version(), v + 1);
    assert_eq!(t.lookup(&ip(2)), Some((mac(7), NeighOrigin::Control)));
    // A withdrawn claim is forgotten: by address or by MAC.
    t.learn(b(3, 8), t0);
    t.install(b(3, 9), t0);
    assert!(t.remove_control(&ip(3)));
    assert_eq!(
        t.lookup(&ip(3)),
        Some((mac(8), NeighOrigin::Local)),
        "the local binding stays"
    );
    t.learn(b(4, 8), t0);
    t.install(b(4, 9), t0);
    assert_eq!(t.remove_control_mac(&mac(9)), 0);
    assert_eq!(t.remove_mac(&mac(8)), 2);
    assert_eq!(t.lookup(&ip(3)), None);
    assert_eq!(t.lookup(&ip(4)), None);
    // A full table sweeping a stale local binding falls back to its claim rather than dropping the address.
    let t = NeighTable::new(2, t0);
    t.learn(b(1, 1), t0);
    assert_eq!(t.install(b(1, 2), t0), Insert::OwnedLocally);
    t.install(b(2, 3), t0);
    let v = t.local_version();
    assert_eq!(t.learn(b(3, 4), t0 + 400 * S), Insert::Full);
    assert_eq!(t.lookup(&ip(1)), Some((mac(2), NeighOrigin::Control)));
    assert_eq!(t.local_version(), v + 1, "the local set changed");
}

#[test]
fn invalid_bindings_are_refused() {
    let t0 = Instant::now();
    let t = NeighTable::new(16, t0);
    for bad in [
        Binding {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            mac: mac(1),
        },
        Binding {
            ip: IpAddr::V4(Ipv4Addr::BROADCAST),
            mac: mac(1),
        },
        Binding {
            ip: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
            mac: mac(1),
        },
        Binding {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mac: mac(1),
        },
        Binding {
            ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            mac: mac(1),
        },
        Binding {
            ip: "ff02::1".parse().unwrap(),
            mac: mac(1),
        },
        Binding {
            ip: ip(1),
            mac: MacAddr::ZERO,
        },
        Binding {
            ip: ip(1),
            mac: MacAddr::BROADCAST,
        },
        Binding {
            ip: ip(1),
            mac: MacAddr([1, 0, 0x5e, 0, 0, 1]),
        },
    ] {
        assert_eq!(t.learn(bad, t0), Insert::Invalid, "{bad:?}");
        assert_eq!(t.install(bad, t0), Insert::Invalid, "{bad:?}");
    }
    assert!(t.is_empty());
    let v6 = Binding {
        ip: "fe80::1".parse().unwrap(),
        mac: mac(1),
    };
    assert_eq!(t.learn(v6, t0), Insert::New);
}

#[test]
fn full_table_never_evicts_control_or_fresh_local_bindings() {
    let t0 = Instant::now();
    let t = NeighTable::new(4, t0);
    t.install(b(1, 1), t0);
    t.install(b(2, 2), t0);
    t.learn(b(3, 3), t0);
    t.learn(b(4, 4), t0 + 100 * S);
    // Full: a flood of new senders is refused, neither control nor fresh local bindings go.
    for i in 10..100 {
        assert_eq!(t.learn(b(i, 9), t0 + 200 * S), Insert::Full);
        assert_eq!(t.install(b(i + 1000, 9), t0 + 200 * S), Insert::Full);
    }
    assert_eq!(t.len(), 4);
    // Existing addresses still update in a full table.
    assert_eq!(t.learn(b(3, 3), t0 + 250 * S), Insert::Refreshed);
    // The refused sweep at 200 s remembered that nothing can be stale before binding 3's 300 s; the sweep at
    // 399 s finds nothing (3 was refreshed at 250 s, 4 is 299 s old) and waits for binding 4's 400 s.
    assert_eq!(t.learn(b(50, 9), t0 + 399 * S), Insert::Full);
    let v = t.local_version();
    assert_eq!(
        t.learn(b(50, 9), t0 + 401 * S),
        Insert::New,
        "binding 4 went stale and was evicted"
    );
    assert_eq!(t.lookup(&ip(4)), None);
    assert!(t.local_version() > v);
    for i in [1, 2, 3, 50] {
        assert!(t.lookup(&ip(i)).is_some(), "binding {i} kept");
    }
    assert_eq!(t.len(), 4);
    // Control bindings never age out, even under pressure.
    assert_eq!(t.install(b(60, 9), t0 + 10_000 * S), Insert::New);
    assert!(t.lookup(&ip(1)).is_some() && t.lookup(&ip(2)).is_some());
    assert!(t.len() <= 4);
}

#[test]
fn local_listing_for_adverts() {
    let t0 = Instant::now();
    let t = NeighTable::new(16, t0);
    t.learn(b(2, 1), t0);
    t.learn(b(1, 1), t0);
    t.learn(b(3, 2), t0);
    t.install(b(4, 1), t0);
    let v6 = Binding {
        ip: "fd00::1".parse().unwrap(),
        mac: mac(1),
    };
    t.learn(v6, t0);
    assert_eq!(t.local_ips_of(&mac(1), 8), vec![ip(1), ip(2), v6.ip]);
    assert_eq!(t.local_ips_of(&mac(1), 2), vec![ip(1), ip(2)]);
    assert_eq!(t.local_bindings(), vec![b(1, 1), b(2, 1), v6, b(3, 2)]);
    let rows = t.rows(t0 + 5 * S);
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0],
        NeighRow {
            ip: ip(1),
            mac: mac(1),
            origin: NeighOrigin::Local,
            age_s: 5
        }
    );
    assert_eq!(rows[3].origin, NeighOrigin::Control);
    let v = t.local_version();
    assert_eq!(t.remove_control_mac(&mac(1)), 1);
    assert_eq!(t.local_version(), v);
    assert!(t.remove(&ip(3)));
    assert_eq!(t.local_version(), v + 1);
}

#[test]
fn shared_between_threads() {
    let t0 = Instant::now();
    let t = std::sync::Arc::new(NeighTable::new(256, t0));
    let hs: Vec<_> = (0..4u8)
        .map(|k| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..200u16 {
                    t.learn(b(i, k + 1), t0);
                    let _ = t.lookup(&ip(i));
                    t.install(b(i + 1000, k + 1), t0);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // Capacity is exact up to one racing insert per writer.
    assert!(t.len() <= 256 + 4, "{}", t.len());
}

proptest! {
    /// Any sequence of operations keeps the bound and never loses a control binding to an insert.
    #[test]
    fn bounded_and_control_bindings_survive(ops in proptest::collection::vec((0u8..4, 0u16..40, 1u8..6, 0u64..1000), 1..200)) {
        let t0 = Instant::now();
        let t = NeighTable::new(8, t0);
        let mut now = t0;
        for (op, i, m, dt) in ops {
            now += Duration::from_secs(dt);
            let before: Vec<_> = t.rows(now).into_iter().filter(|r| r.origin == NeighOrigin::Control).collect();
            match op {
                0 => { t.learn(b(i, m), now); }
                1 => { t.install(b(i, m), now); }
                2 => { t.remove_mac(&mac(m)); }
                _ => { t.remove_control(&ip(i)); }
            }
            prop_assert!(t.len() <= 8);
            if op == 1 {
                for r in before {
                    // An install only ever replaces a control binding of its own address.
                    if r.ip != ip(i) {
                        prop_assert_eq!(t.lookup(&r.ip), Some((r.mac, NeighOrigin::Control)));
                    }
                }
            }
        }
    }
}
