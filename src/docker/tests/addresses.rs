//! IPAM: the gateway, specific and allocated addresses, releases, and pool ids.

use super::*;
use proptest::prelude::*;

#[test]
fn ipam_addresses() {
    let d = driver();
    let pool = create(&d, NID, "10.20.0.0/16", json!({}), json!({})).unwrap();
    // Gateway: the first address, never allocated; another --gateway is refused.
    let g = ok(
        &d,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool, "Address": "10.20.0.1", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    assert_eq!(g["Address"], "10.20.0.1/16");
    assert_eq!(
        err(&d, "/IpamDriver.RequestAddress", json!({"PoolID": pool, "Address": "10.20.0.9", "Options": {"RequestAddressType": "com.docker.network.gateway"}})).0,
        400
    );
    assert!(d.backend().allocated.lock().unwrap().is_empty());
    // Specific addresses (--ip): inside the subnet, not the gateway, not taken.
    let v = ok(
        &d,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool, "Address": "10.20.3.3"}),
    );
    assert_eq!(v["Address"], "10.20.3.3/16");
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": "10.20.3.3"})
        )
        .0,
        409
    );
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": "10.99.0.3"})
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": "10.20.0.1"})
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": "x"})
        )
        .0,
        400
    );
    // Many addresses are unique.
    let mut seen = BTreeSet::new();
    for _ in 0..50 {
        let v = ok(&d, "/IpamDriver.RequestAddress", json!({"PoolID": pool}));
        assert!(seen.insert(v["Address"].as_str().unwrap().to_string()));
    }
    // A pool whose subnet no network has.
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": "@10.99.0.0/16"})
        )
        .0,
        404
    );
    // Releasing in a network that is gone is fine; bad addresses are not.
    ok(
        &d,
        "/IpamDriver.ReleaseAddress",
        json!({"PoolID": "@10.99.0.0/16", "Address": "10.99.0.5"}),
    );
    assert_eq!(
        err(
            &d,
            "/IpamDriver.ReleaseAddress",
            json!({"PoolID": pool, "Address": "x"})
        )
        .0,
        400
    );
}

proptest! {
    #[test]
    fn pool_ids_roundtrip(a in any::<u8>(), p in 8u8..=30, named in any::<bool>()) {
        let subnet: ipnet::IpNet = format!("10.{a}.0.0/{p}").parse::<ipnet::IpNet>().unwrap().trunc();
        let pool = ipam::Pool { name: named.then(|| "app".to_string()), subnet };
        prop_assert_eq!(ipam::Pool::parse(&pool.id()).unwrap(), pool);
    }

    #[test]
    fn pool_id_parser_never_panics(s in ".{0,80}") {
        let _ = ipam::Pool::parse(&s);
    }
}
