//! `docker network create`: the network named by its subnet (name and VNI derived alike on every host),
//! by a driver option or by an IPAM option, and the requests that are refused.

use super::*;

#[test]
fn create_by_subnet_derives_name_and_vni_alike_on_every_host() {
    let d = driver();
    let pool = create(&d, NID, "10.20.0.0/16", json!({}), json!({})).unwrap();
    assert_eq!(pool, "@10.20.0.0/16");
    let created = d.backend().created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    let name = derived_name(&"10.20.0.0/16".parse().unwrap());
    assert_eq!(created[0].name, name);
    assert!(name.len() <= 15);
    assert_eq!(created[0].vni, derived_vni(&name));
    assert!((1..1 << 24).contains(&created[0].vni));
    assert_eq!(d.snapshot().networks.get(NID), Some(&name));
    // Another host (another driver over the same cluster networks) running the same command joins it.
    let d2 = Driver::new(Fake::default(), None).unwrap();
    d2.backend()
        .networks
        .lock()
        .unwrap()
        .push(d.backend().networks.lock().unwrap()[0].clone());
    create(&d2, NID2, "10.20.0.0/16", json!({}), json!({})).unwrap();
    assert!(d2.backend().created.lock().unwrap().is_empty());
}

#[test]
fn create_by_name_with_options() {
    let d = driver();
    create(
        &d,
        NID,
        "10.20.0.0/16",
        json!({"network": "app", "vni": "42", "mtu": "1400", "egress": "true"}),
        json!({}),
    )
    .unwrap();
    let def = d.backend().created.lock().unwrap()[0].clone();
    assert_eq!(
        def,
        NetworkDef {
            name: "app".into(),
            vni: 42,
            subnet: "10.20.0.0/16".parse().unwrap(),
            mtu: Some(1400),
            egress: true
        }
    );
    // The same network cannot back a second Docker network on this host.
    let (s, e) = create(&d, NID2, "10.20.0.0/16", json!({"network": "app"}), json!({})).unwrap_err();
    assert_eq!(s, 409, "{e}");
    // A different subnet for an existing name is an error (driver option and IPAM option).
    let (s, e) = create(&d, NID2, "10.30.0.0/16", json!({"network": "app"}), json!({})).unwrap_err();
    assert_eq!(s, 409);
    assert!(e.contains("10.20.0.0/16"), "{e}");
    let (s, _) = create(&d, NID2, "10.30.0.0/16", json!({}), json!({"network": "app"})).unwrap_err();
    assert_eq!(s, 409);
    // A different VNI too.
    ok(&d, "/NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    let (s, _) = create(
        &d,
        NID2,
        "10.20.0.0/16",
        json!({"network": "app", "vni": "43"}),
        json!({}),
    )
    .unwrap_err();
    assert_eq!(s, 409);
}

#[test]
fn ipam_opt_names_the_network_and_the_subnet_may_be_omitted() {
    let d = driver();
    let pool = create(&d, NID, "10.20.0.0/16", json!({}), json!({"network": "app"})).unwrap();
    assert_eq!(pool, "app@10.20.0.0/16");
    assert_eq!(d.backend().created.lock().unwrap()[0].name, "app");
    // Second host: no subnet, only the name.
    let d2 = Driver::new(Fake::default(), None).unwrap();
    d2.backend()
        .networks
        .lock()
        .unwrap()
        .push(d.backend().networks.lock().unwrap()[0].clone());
    let v = ok(
        &d2,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": api::LOCAL_SPACE, "Pool": "", "Options": {"network": "app"}, "V6": false}),
    );
    assert_eq!(v["Pool"], "10.20.0.0/16");
    assert_eq!(v["PoolID"], "app@10.20.0.0/16");
    // Without subnet and without name: nothing identifies the network.
    assert_eq!(
        err(
            &d2,
            "/IpamDriver.RequestPool",
            json!({"Pool": "", "Options": {}, "V6": false})
        )
        .0,
        400
    );
    // A name that does not exist yet needs the subnet.
    assert_eq!(
        err(
            &d2,
            "/IpamDriver.RequestPool",
            json!({"Pool": "", "Options": {"network": "zzz"}})
        )
        .0,
        404
    );
    // Contradicting names.
    let (s, e) = create(
        &d2,
        NID2,
        "10.20.0.0/16",
        json!({"network": "other"}),
        json!({"network": "app"}),
    )
    .unwrap_err();
    assert_eq!(s, 400, "{e}");
    ok(
        &d,
        "/IpamDriver.ReleasePool",
        json!({"PoolID": "app@10.20.0.0/16"}),
    );
    assert!(d.snapshot().named_pools.is_empty());
}

#[test]
fn bad_network_requests() {
    let d = driver();
    for (opts, what) in [
        (json!({"vni": "0"}), "vni"),
        (json!({"vni": "16777216"}), "vni"),
        (json!({"mtu": "99"}), "mtu"),
        (json!({"egress": "maybe"}), "egress"),
        (json!({"network": "way-too-long-name"}), "network"),
        (json!({"color": "blue"}), "unknown"),
        (json!({"vni": 5}), "string"),
    ] {
        let (s, e) = create(&d, NID, "10.20.0.0/16", opts, json!({})).unwrap_err();
        assert_eq!(s, 400);
        assert!(e.contains(what), "{e}");
    }
    // Pools not from our IPAM, none, or two.
    let body =
        |v4: Value, v6: Value| json!({"NetworkID": NID, "Options": {}, "IPv4Data": v4, "IPv6Data": v6});
    let e = err(
        &d,
        "/NetworkDriver.CreateNetwork",
        body(
            json!([{"AddressSpace": "LocalDefault", "Pool": "172.18.0.0/16"}]),
            json!([]),
        ),
    );
    assert!(e.1.contains("--ipam-driver overlayd"), "{}", e.1);
    assert_eq!(
        err(&d, "/NetworkDriver.CreateNetwork", body(json!([]), json!([]))).0,
        400
    );
    let two = body(
        json!([{"AddressSpace": api::LOCAL_SPACE, "Pool": "10.1.0.0/16"}]),
        json!([{"AddressSpace": api::LOCAL_SPACE, "Pool": "fd00::/64"}]),
    );
    assert_eq!(err(&d, "/NetworkDriver.CreateNetwork", two).0, 400);
    let bad_id =
        json!({"NetworkID": "x", "IPv4Data": [{"AddressSpace": api::LOCAL_SPACE, "Pool": "10.1.0.0/16"}]});
    assert_eq!(err(&d, "/NetworkDriver.CreateNetwork", bad_id).0, 400);
    // IPAM: sub pools, unknown options, wrong family, bad ids.
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestPool",
            json!({"Pool": "10.1.0.0/16", "SubPool": "10.1.1.0/24"})
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestPool",
            json!({"Pool": "10.1.0.0/16", "Options": {"x": "y"}})
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/IpamDriver.RequestPool",
            json!({"Pool": "10.1.0.0/16", "V6": true})
        )
        .0,
        400
    );
    assert_eq!(
        err(&d, "/IpamDriver.RequestPool", json!({"Pool": "10.1.0.0/31"})).0,
        400
    );
    assert_eq!(err(&d, "/IpamDriver.RequestPool", json!({"Pool": "nope"})).0, 400);
    for id in ["", "nope", "a@b", "way-too-long-name@10.0.0.0/8"] {
        assert_eq!(
            err(&d, "/IpamDriver.RequestAddress", json!({"PoolID": id})).0,
            400,
            "{id}"
        );
        assert_eq!(
            err(&d, "/IpamDriver.ReleasePool", json!({"PoolID": id})).0,
            400,
            "{id}"
        );
    }
}
