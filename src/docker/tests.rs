//! Every plugin route against a fake backend, including malformed bodies. The fake backend and the request
//! helpers are here; the tests, by concept: the protocol (`tests/protocol.rs`), networks (`tests/networks.rs`),
//! containers (`tests/endpoints.rs`), IPAM addresses (`tests/addresses.rs`), `docker.json`
//! (`tests/persistence.rs`), and the listener (`tests/listener.rs`).

use super::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;

mod addresses;
mod endpoints;
mod listener;
mod networks;
mod persistence;
mod protocol;

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
    fn networks(&self) -> Result<Vec<NetworkInfo>, OpsError> {
        Ok(self.networks.lock().unwrap().clone())
    }
    fn create_network(&self, def: &NetworkDef) -> Result<NetworkInfo, OpsError> {
        let mut n = self.networks.lock().unwrap();
        if n.iter().any(|x| x.vni == def.vni) {
            return Err(OpsError::Conflict(format!("VNI {} is taken", def.vni)));
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
    fn allocate_address(&self, network: &str, want: Option<IpAddr>) -> Result<IpAddr, OpsError> {
        let n = self.networks.lock().unwrap();
        let net = n
            .iter()
            .find(|x| x.name == network)
            .ok_or_else(|| OpsError::NotFound(network.into()))?;
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
            return Err(OpsError::Conflict(format!("{ip} is in use")));
        }
        Ok(ip)
    }
    fn release_address(&self, network: &str, ip: IpAddr) -> Result<(), OpsError> {
        self.allocated.lock().unwrap().remove(&(network.into(), ip));
        Ok(())
    }
    fn create_veth(&self, _: &str, host: &str, _: &str, _: [u8; 6], _: IpAddr) -> Result<u32, OpsError> {
        assert!(host.len() <= 15);
        self.veths.lock().unwrap().insert(host.into());
        Ok(1450)
    }
    fn delete_veth(&self, host: &str) -> Result<(), OpsError> {
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
