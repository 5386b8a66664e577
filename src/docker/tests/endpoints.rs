//! Containers: an endpoint's life from `docker run` to `docker rm` (veth, MAC, gateway), without egress,
//! the refused endpoint requests, and the MACs derived from endpoint ids.

use super::*;
use proptest::prelude::*;

#[test]
fn container_lifecycle() {
    let d = driver();
    let pool = create(
        &d,
        NID,
        "10.20.0.0/16",
        json!({"network": "app", "egress": "true"}),
        json!({}),
    )
    .unwrap();
    // docker run --network app
    let a = ok(
        &d,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool, "Address": "", "Options": {}}),
    );
    let addr = a["Address"].as_str().unwrap().to_string();
    assert!(addr.ends_with("/16"), "{addr}");
    let v = ok(
        &d,
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
    );
    let mac = v["Interface"]["MacAddress"].as_str().unwrap().to_string();
    assert!(mac.starts_with("02:"), "{mac}");
    let v = ok(
        &d,
        "/NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/x", "Options": {}}),
    );
    assert_eq!(
        v["InterfaceName"],
        json!({"SrcName": "ovcbbbbbbbbbb", "DstPrefix": "eth"})
    );
    assert_eq!(v["Gateway"], "10.20.0.1");
    assert_eq!(v["DisableGatewayService"], false);
    assert!(d.backend().veths.lock().unwrap().contains("ovhbbbbbbbbbb"));
    let info = ok(
        &d,
        "/NetworkDriver.EndpointOperInfo",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert_eq!(info["Value"]["host_ifname"], "ovhbbbbbbbbbb");
    for m in [
        "ProgramExternalConnectivity",
        "RevokeExternalConnectivity",
        "DiscoverNew",
        "DiscoverDelete",
    ] {
        ok(
            &d,
            &format!("/NetworkDriver.{m}"),
            json!({"NetworkID": NID, "EndpointID": EID}),
        );
    }
    // docker rm
    ok(
        &d,
        "/NetworkDriver.Leave",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert!(d.backend().veths.lock().unwrap().is_empty());
    ok(
        &d,
        "/NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert!(d.snapshot().endpoints.is_empty());
    ok(
        &d,
        "/IpamDriver.ReleaseAddress",
        json!({"PoolID": pool, "Address": addr.split('/').next().unwrap()}),
    );
    assert!(d.backend().allocated.lock().unwrap().is_empty());
    // Idempotent: again, and for unknown endpoints.
    ok(
        &d,
        "/NetworkDriver.Leave",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    ok(
        &d,
        "/NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    let info = ok(
        &d,
        "/NetworkDriver.EndpointOperInfo",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert_eq!(info, json!({"Value": {}}));
    // docker network rm
    ok(
        &d,
        "/IpamDriver.ReleaseAddress",
        json!({"PoolID": pool, "Address": "10.20.0.1"}),
    );
    ok(&d, "/NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    ok(&d, "/IpamDriver.ReleasePool", json!({"PoolID": pool}));
    assert!(d.snapshot().networks.is_empty());
}

#[test]
fn no_egress_means_no_gateway_and_no_docker_gwbridge() {
    let d = driver();
    let pool = create(&d, NID, "10.20.0.0/16", json!({}), json!({})).unwrap();
    let a = ok(&d, "/IpamDriver.RequestAddress", json!({"PoolID": pool}));
    ok(
        &d,
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": a["Address"], "MacAddress": "02:11:22:33:44:55"}}),
    );
    let v = ok(
        &d,
        "/NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert!(v.get("Gateway").is_none(), "{v}");
    assert_eq!(v["DisableGatewayService"], true);
    assert_eq!(d.snapshot().endpoints[EID].mac, "02:11:22:33:44:55");
}

#[test]
fn endpoint_errors() {
    let d = driver();
    create(&d, NID, "10.20.0.0/16", json!({}), json!({})).unwrap();
    let ep =
        |nid: &str, eid: &str, iface: Value| json!({"NetworkID": nid, "EndpointID": eid, "Interface": iface});
    // Unknown network, missing address, bad address, bad MAC, bad ids.
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.CreateEndpoint",
            ep(NID2, EID, json!({"Address": "10.20.0.5/16"}))
        )
        .0,
        404
    );
    assert_eq!(
        err(&d, "/NetworkDriver.CreateEndpoint", ep(NID, EID, json!({}))).0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.CreateEndpoint",
            ep(NID, EID, json!({"Address": "10.20.0.5"}))
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.CreateEndpoint",
            ep(
                NID,
                EID,
                json!({"Address": "10.20.0.5/16", "MacAddress": "01:00:00:00:00:01"})
            )
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.CreateEndpoint",
            ep(NID, "short", json!({"Address": "10.20.0.5/16"}))
        )
        .0,
        400
    );
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.CreateEndpoint",
            ep(NID, &"é".repeat(20), json!({"Address": "10.20.0.5/16"}))
        )
        .0,
        400
    );
    // Join of an unknown endpoint, or with the wrong network.
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.Join",
            json!({"NetworkID": NID, "EndpointID": EID})
        )
        .0,
        404
    );
    ok(
        &d,
        "/NetworkDriver.CreateEndpoint",
        ep(NID, EID, json!({"Address": "10.20.0.5/16"})),
    );
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.Join",
            json!({"NetworkID": NID2, "EndpointID": EID})
        )
        .0,
        400
    );
    // Two endpoints whose ids share the first 10 characters would share a veth name.
    let eid2 = format!("{}22", &EID[..20]);
    assert_eq!(
        err(
            &d,
            "/NetworkDriver.CreateEndpoint",
            ep(NID, &eid2, json!({"Address": "10.20.0.6/16"}))
        )
        .0,
        409
    );
}

proptest! {
    #[test]
    fn macs_are_unicast_local(id in "[a-f0-9]{64}") {
        let m = network::derived_mac(&id);
        prop_assert_eq!(m[0], 0x02);
        prop_assert_eq!(network::parse_mac(&network::format_mac(m)), Some(m));
    }
}
