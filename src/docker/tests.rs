//! Every plugin route against a fake backend, including malformed bodies.

use super::listen::route;
use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// In-memory daemon: networks, a per-network address counter, veths.
#[derive(Debug, Default)]
struct Fake {
    networks: Mutex<Vec<NetworkInfo>>,
    allocated: Mutex<BTreeSet<(String, IpAddr)>>,
    veths: Mutex<BTreeSet<String>>,
    next: Mutex<u32>,
    created: Mutex<Vec<NetworkDef>>,
}

impl DockerBackend for Fake {
    fn networks(&self) -> Result<Vec<NetworkInfo>, BackendError> {
        Ok(self.networks.lock().unwrap().clone())
    }
    fn create_network(&self, def: &NetworkDef) -> Result<NetworkInfo, BackendError> {
        let mut n = self.networks.lock().unwrap();
        if n.iter().any(|x| x.vni == def.vni) {
            return Err(BackendError::Conflict(format!("VNI {} is taken", def.vni)));
        }
        let info = NetworkInfo {
            name: def.name.clone(),
            vni: def.vni,
            subnet: Some(def.subnet),
            mtu: def.mtu.unwrap_or(1450),
            egress: def.egress,
            gateway: def.egress.then(|| gateway_of(&def.subnet)).flatten(),
        };
        n.push(info.clone());
        self.created.lock().unwrap().push(def.clone());
        Ok(info)
    }
    fn allocate_address(&self, network: &str, want: Option<IpAddr>) -> Result<IpAddr, BackendError> {
        let n = self.networks.lock().unwrap();
        let net = n
            .iter()
            .find(|x| x.name == network)
            .ok_or_else(|| BackendError::NotFound(network.into()))?;
        let ip = match want {
            Some(ip) => ip,
            None => {
                let mut next = self.next.lock().unwrap();
                *next += 1;
                let IpAddr::V4(base) = net.subnet.unwrap().network() else {
                    panic!()
                };
                IpAddr::V4(std::net::Ipv4Addr::from(u32::from(base) + 1 + *next))
            }
        };
        if !self.allocated.lock().unwrap().insert((network.into(), ip)) {
            return Err(BackendError::Conflict(format!("{ip} is in use")));
        }
        Ok(ip)
    }
    fn release_address(&self, network: &str, ip: IpAddr) -> Result<(), BackendError> {
        self.allocated.lock().unwrap().remove(&(network.into(), ip));
        Ok(())
    }
    fn create_veth(&self, _: &str, host: &str, _: &str, _: [u8; 6], _: IpAddr) -> Result<u32, BackendError> {
        assert!(host.len() <= 15);
        self.veths.lock().unwrap().insert(host.into());
        Ok(1450)
    }
    fn delete_veth(&self, host: &str) -> Result<(), BackendError> {
        self.veths.lock().unwrap().remove(host);
        Ok(())
    }
}

const NID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NID2: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const EID: &str = "bbbbbbbbbb11111111111111111111111111111111111111111111111111111111";

fn driver() -> Driver<Fake> {
    Driver::new(Fake::default(), None).unwrap()
}

fn call(d: &Driver<Fake>, path: &str, body: Value) -> (u16, Value) {
    let r = d.handle(path, body.to_string().as_bytes());
    (r.status, serde_json::from_str(&r.body).unwrap())
}

fn ok(d: &Driver<Fake>, path: &str, body: Value) -> Value {
    let (s, v) = call(d, path, body);
    assert_eq!(s, 200, "{path}: {v}");
    assert!(v.get("Err").is_none(), "{v}");
    v
}

fn err(d: &Driver<Fake>, path: &str, body: Value) -> (u16, String) {
    let (s, v) = call(d, path, body);
    assert_ne!(s, 200, "{path} should fail: {v}");
    (s, v["Err"].as_str().expect("Err string").to_string())
}

/// The calls `docker network create -d overlayd --ipam-driver overlayd --subnet S [-o …] [--ipam-opt …]` makes.
fn create(
    d: &Driver<Fake>,
    nid: &str,
    subnet: &str,
    opts: Value,
    ipam_opts: Value,
) -> Result<String, (u16, String)> {
    let (s, v) = call(
        d,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": api::LOCAL_SPACE, "Pool": subnet, "SubPool": "", "Options": ipam_opts, "V6": false}),
    );
    if s != 200 {
        return Err((s, v["Err"].as_str().unwrap_or_default().to_string()));
    }
    let pool_id = v["PoolID"].as_str().unwrap().to_string();
    let pool = v["Pool"].as_str().unwrap().to_string();
    let gw = ok(
        d,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    let (s, v) = call(
        d,
        "/NetworkDriver.CreateNetwork",
        json!({"NetworkID": nid, "Options": {"com.docker.network.generic": opts, "com.docker.network.enable_ipv6": false},
               "IPv4Data": [{"AddressSpace": api::LOCAL_SPACE, "Pool": pool, "Gateway": gw["Address"]}], "IPv6Data": []}),
    );
    if s != 200 {
        return Err((s, v["Err"].as_str().unwrap_or_default().to_string()));
    }
    Ok(pool_id)
}

#[test]
fn activate_and_capabilities() {
    let d = driver();
    assert_eq!(
        ok(&d, "/Plugin.Activate", json!({})),
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    // Docker sends GetCapabilities with an empty body.
    let r = d.handle("/NetworkDriver.GetCapabilities", b"");
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, json!({"Scope": "local", "ConnectivityScope": "global"}));
    assert_eq!(
        ok(&d, "/IpamDriver.GetCapabilities", json!({})),
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    let v = ok(&d, "/IpamDriver.GetDefaultAddressSpaces", json!({}));
    assert_eq!(v["LocalDefaultAddressSpace"], api::LOCAL_SPACE);
    assert_eq!(v["GlobalDefaultAddressSpace"], api::GLOBAL_SPACE);
    assert_eq!(err(&d, "/NetworkDriver.AllocateNetwork", json!({})).0, 404);
    assert_eq!(err(&d, "/IpamDriver.Nope", json!({})).0, 404);
    assert_eq!(err(&d, "/Other", json!({})).0, 404);
}

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

#[test]
fn malformed_bodies_get_err_400() {
    let d = driver();
    let methods = [
        "/NetworkDriver.CreateNetwork",
        "/NetworkDriver.DeleteNetwork",
        "/NetworkDriver.CreateEndpoint",
        "/NetworkDriver.DeleteEndpoint",
        "/NetworkDriver.Join",
        "/NetworkDriver.Leave",
        "/NetworkDriver.EndpointOperInfo",
        "/NetworkDriver.DiscoverNew",
        "/NetworkDriver.DiscoverDelete",
        "/NetworkDriver.ProgramExternalConnectivity",
        "/NetworkDriver.RevokeExternalConnectivity",
        "/IpamDriver.RequestPool",
        "/IpamDriver.ReleasePool",
        "/IpamDriver.RequestAddress",
        "/IpamDriver.ReleaseAddress",
    ];
    for m in methods {
        for body in [&b"{"[..], b"[1,2]", b"\"x\"", b"{\"NetworkID\": 5}", b"\xff\xfe"] {
            if m.contains("Discover") && body.starts_with(b"{\"") {
                continue; // Discover* bodies have no NetworkID; any object is accepted.
            }
            let r = d.handle(m, body);
            assert_eq!(r.status, 400, "{m} {body:?}: {}", r.body);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert!(v["Err"].as_str().is_some_and(|e| !e.is_empty()), "{m}: {v}");
        }
    }
}

#[test]
fn backend_errors_map_to_statuses() {
    #[derive(Debug)]
    struct Down;
    impl DockerBackend for Down {
        fn networks(&self) -> Result<Vec<NetworkInfo>, BackendError> {
            Err(BackendError::Unavailable("no admitter reachable".into()))
        }
        fn create_network(&self, _: &NetworkDef) -> Result<NetworkInfo, BackendError> {
            Err(BackendError::Internal("x".into()))
        }
        fn allocate_address(&self, _: &str, _: Option<IpAddr>) -> Result<IpAddr, BackendError> {
            Err(BackendError::Unavailable("no block".into()))
        }
        fn release_address(&self, _: &str, _: IpAddr) -> Result<(), BackendError> {
            Ok(())
        }
        fn create_veth(&self, _: &str, _: &str, _: &str, _: [u8; 6], _: IpAddr) -> Result<u32, BackendError> {
            Err(BackendError::Internal("x".into()))
        }
        fn delete_veth(&self, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
    }
    let d = Driver::new(Down, None).unwrap();
    let r = d.handle("/IpamDriver.RequestAddress", br#"{"PoolID":"app@10.20.0.0/16"}"#);
    assert_eq!(r.status, 503);
    assert!(r.body.contains("no block"), "{}", r.body);
    let r = d.handle(
        "/IpamDriver.RequestPool",
        br#"{"Pool":"","Options":{"network":"app"}}"#,
    );
    assert_eq!(r.status, 503);
}

#[test]
fn state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("overlayd-docker-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join(state::STATE_FILE));
    let fake = Fake::default();
    let d = Driver::new(fake, Some(&dir)).unwrap();
    create(&d, NID, "10.20.0.0/16", json!({"network": "app"}), json!({})).unwrap();
    ok(
        &d,
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.20.0.5/16"}}),
    );
    ok(
        &d,
        "/NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    let nets = d.backend().networks.lock().unwrap().clone();
    drop(d);
    // A restarted daemon: the same cluster networks, a fresh driver reading docker.json.
    let d = Driver::new(Fake::default(), Some(&dir)).unwrap();
    *d.backend().networks.lock().unwrap() = nets;
    d.backend().veths.lock().unwrap().insert("ovhbbbbbbbbbb".into());
    assert_eq!(d.snapshot().endpoints[EID].host_ifname, "ovhbbbbbbbbbb");
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
    ok(&d, "/NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    // A corrupt file is refused, naming the file.
    std::fs::write(dir.join(state::STATE_FILE), "{not json").unwrap();
    let e = Driver::new(Fake::default(), Some(&dir)).unwrap_err();
    assert!(e.to_string().contains("docker.json"), "{e}");
    std::fs::write(
        dir.join(state::STATE_FILE),
        r#"{"networks":{},"endpoints":{"x":{"network_id":"n","network":"app","address":"10.0.0.1/8","mac":"02:00:00:00:00:01","host_ifname":"bad/name","peer_ifname":"p","joined":true}}}"#,
    )
    .unwrap();
    assert!(Driver::new(Fake::default(), Some(&dir)).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn addresses_parse() {
    use listen::AddrError;
    assert_eq!(
        DEFAULT_DOCKER_PLUGIN.parse::<DockerAddr>().unwrap(),
        DockerAddr::Unix("/run/docker/plugins/overlayd.sock".into())
    );
    assert_eq!(
        "tcp:127.0.0.1:7950".parse::<DockerAddr>().unwrap(),
        DockerAddr::Tcp("127.0.0.1:7950".parse().unwrap())
    );
    assert_eq!(
        "tcp:[::1]:7950".parse::<DockerAddr>().unwrap(),
        DockerAddr::Tcp("[::1]:7950".parse().unwrap())
    );
    assert!(matches!(
        "tcp:0.0.0.0:7950".parse::<DockerAddr>(),
        Err(AddrError::NotLoopback(_))
    ));
    assert!(matches!(
        "tcp:10.0.0.1:7950".parse::<DockerAddr>(),
        Err(AddrError::NotLoopback(_))
    ));
    assert!(matches!(
        "tcp:127.0.0.1:0".parse::<DockerAddr>(),
        Err(AddrError::NotLoopback(_))
    ));
    assert!(matches!(
        "tcp:127.0.0.1".parse::<DockerAddr>(),
        Err(AddrError::Syntax(_))
    ));
    assert!(matches!(
        "unix:relative.sock".parse::<DockerAddr>(),
        Err(AddrError::Path(_))
    ));
    assert!(matches!(
        format!("unix:/{}", "a".repeat(200)).parse::<DockerAddr>(),
        Err(AddrError::Path(_))
    ));
    assert!(matches!(
        "/run/x.sock".parse::<DockerAddr>(),
        Err(AddrError::Syntax(_))
    ));
    assert!(matches!("".parse::<DockerAddr>(), Err(AddrError::Syntax(_))));
    let a: DockerAddr = "tcp:127.0.0.1:7950".parse().unwrap();
    assert_eq!(a.spec_url(), "tcp://127.0.0.1:7950");
    assert_eq!(a.to_string(), "tcp:127.0.0.1:7950");
    assert_eq!(a.to_string().parse::<DockerAddr>().unwrap(), a);
    let u: DockerAddr = "unix:/run/docker/plugins/o.sock".parse().unwrap();
    assert_eq!(u.spec_url(), "unix:///run/docker/plugins/o.sock");
}

#[test]
fn http_heads_are_checked() {
    assert_eq!(
        route(
            b"POST /NetworkDriver.Join HTTP/1.1\r\nHost: 127.0.0.1:7950\r\nContent-Length: 2\r\n\r\n",
            true
        )
        .unwrap(),
        "/NetworkDriver.Join"
    );
    assert_eq!(
        route(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n\r\n", false).unwrap(),
        "/Plugin.Activate"
    );
    assert_eq!(
        route(b"GET /Plugin.Activate HTTP/1.1\r\n\r\n", false)
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        route(
            b"POST /Plugin.Activate HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            true
        )
        .unwrap_err()
        .status,
        403
    );
    let e = route(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap_err();
    assert_eq!(e.status, 501);
    assert!(e.body.contains("Err"), "{}", e.body);
    assert_eq!(route(b"garbage\r\n\r\n", false).unwrap_err().status, 400);
}

#[tokio::test]
async fn serves_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let d = Arc::new(driver());
    let task = tokio::spawn(listen::serve(listen::Listener::Tcp(l), d));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST /Plugin.Activate HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.ends_with(r#"{"Implements":["NetworkDriver","IpamDriver"]}"#),
        "{out}"
    );
    task.abort();
}

use std::sync::Arc;

proptest! {
    #[test]
    fn any_body_gets_an_answer(path in prop::sample::select(vec![
        "/NetworkDriver.CreateNetwork", "/NetworkDriver.CreateEndpoint", "/NetworkDriver.Join",
        "/IpamDriver.RequestPool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
    ]), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let d = driver();
        let r = d.handle(path, &body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        prop_assert!(r.status == 200 || v["Err"].is_string());
    }

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

    #[test]
    fn state_loader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = std::env::temp_dir().join(format!("overlayd-docker-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(state::STATE_FILE), &bytes).unwrap();
        let _ = State::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn macs_are_unicast_local(id in "[a-f0-9]{64}") {
        let m = network::derived_mac(&id);
        prop_assert_eq!(m[0], 0x02);
        prop_assert_eq!(network::parse_mac(&network::format_mac(m)), Some(m));
    }
}
