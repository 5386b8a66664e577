//! `NetworkDriver.*`: Docker networks → cluster networks, endpoints → veth pairs on the network's bridge.
//!
//! Flow for `docker run --network app`: (IPAM RequestAddress) → CreateEndpoint (we pick the MAC) → Join (we
//! create the veth pair; Docker moves `SrcName` into the container, renames it `eth<N>` and sets the
//! address) → … → Leave (we delete the pair) → DeleteEndpoint → (IPAM ReleaseAddress).

use super::api::{self, CreateEndpoint, CreateNetwork, EndpointRef, IpamData, NetworkId};
use super::{
    check_id, derived_name, derived_vni, fnv1a, parse, DockerBackend, Driver, DriverError, NetworkDef,
};
use super::{Endpoint, NetworkInfo};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;

/// Driver options (`docker network create -o KEY=VALUE`) overlayd understands.
const KNOWN_OPTIONS: &[&str] = &["network", "vni", "mtu", "egress"];

impl<B: DockerBackend> Driver<B> {
    pub(crate) fn network_call(&self, method: &str, body: &[u8]) -> Result<Value, DriverError> {
        match method {
            "GetCapabilities" => Ok(json!({ "Scope": "local", "ConnectivityScope": "global" })),
            "CreateNetwork" => self.create_network(parse(method, body)?),
            "DeleteNetwork" => {
                let r: NetworkId = parse(method, body)?;
                check_id("NetworkID", &r.network_id)?;
                let mut st = self.lock();
                if st.networks.remove(&r.network_id).is_some() {
                    st.save()?;
                }
                Ok(json!({}))
            }
            "CreateEndpoint" => self.create_endpoint(parse(method, body)?),
            "DeleteEndpoint" => self.delete_endpoint(parse(method, body)?),
            "Join" => self.join(parse(method, body)?),
            "Leave" => self.leave(parse(method, body)?),
            "EndpointOperInfo" => {
                let r: EndpointRef = parse(method, body)?;
                check_id("EndpointID", &r.endpoint_id)?;
                let st = self.lock();
                Ok(match st.endpoints.get(&r.endpoint_id) {
                    Some(e) => json!({ "Value": {
                        "network": e.network, "address": e.address, "mac": e.mac,
                        "host_ifname": e.host_ifname, "joined": e.joined,
                    }}),
                    None => json!({ "Value": {} }),
                })
            }
            // Discovery and external connectivity (port publishing) are not used: nothing to do, but the
            // request must still be well-formed.
            "DiscoverNew" | "DiscoverDelete" => {
                let _: serde_json::Map<String, Value> = parse(method, body)?;
                Ok(json!({}))
            }
            "ProgramExternalConnectivity" | "RevokeExternalConnectivity" => {
                let r: EndpointRef = parse(method, body)?;
                check_id("EndpointID", &r.endpoint_id)?;
                Ok(json!({}))
            }
            _ => Err(DriverError::not_found(format!(
                "NetworkDriver.{method} is not implemented by overlayd"
            ))),
        }
    }

    fn create_network(&self, r: CreateNetwork) -> Result<Value, DriverError> {
        check_id("NetworkID", &r.network_id)?;
        let opts = generic_options(&r.options)?;
        let pools: Vec<&IpamData> = r
            .ipv4_data
            .iter()
            .flatten()
            .chain(r.ipv6_data.iter().flatten())
            .filter(|d| !d.pool.is_empty())
            .collect();
        let data = match pools.as_slice() {
            [one] => *one,
            [] => {
                return Err(DriverError::bad(
                    "no subnet: create the network with --ipam-driver overlayd",
                ))
            }
            _ => {
                return Err(DriverError::bad(
                    "an overlayd network has one subnet: give exactly one --subnet (no dual stack)",
                ))
            }
        };
        if data.address_space != api::LOCAL_SPACE && data.address_space != api::GLOBAL_SPACE {
            return Err(DriverError::bad(format!(
                "address space {:?} is not overlayd's: create the network with --ipam-driver overlayd (addresses must come from this host's block)",
                data.address_space
            )));
        }
        let subnet: ipnet::IpNet = data
            .pool
            .parse()
            .map_err(|_| DriverError::bad(format!("bad pool {:?}", data.pool)))?;
        let subnet = subnet.trunc();
        let networks = self.backend.networks()?;
        let named_pool = self.lock().named_pools.get(&subnet.to_string()).cloned();
        let name = match (opts.name, named_pool) {
            (Some(a), Some(b)) if a != b => {
                return Err(DriverError::bad(format!(
                    "-o network={a} and --ipam-opt network={b} differ: give one name"
                )))
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => networks
                .iter()
                .find(|n| n.subnet.map(|s| s.trunc()) == Some(subnet))
                .map(|n| n.name.clone())
                .unwrap_or_else(|| derived_name(&subnet)),
        };
        match networks.iter().find(|n| n.name == name) {
            Some(n) => {
                if n.subnet.map(|s| s.trunc()) != Some(subnet) {
                    return Err(DriverError {
                        status: 409,
                        msg: format!(
                            "cluster network {name} has subnet {}, not {subnet}: use its subnet (or omit --subnet and give --ipam-opt network={name})",
                            n.subnet.map_or("none".to_string(), |s| s.to_string())
                        ),
                    });
                }
                if let Some(v) = opts.vni.filter(|v| *v != n.vni) {
                    return Err(DriverError {
                        status: 409,
                        msg: format!("cluster network {name} has VNI {}, not {v}", n.vni),
                    });
                }
            }
            None => {
                self.backend.create_network(&NetworkDef {
                    name: name.clone(),
                    vni: opts.vni.unwrap_or_else(|| derived_vni(&name)),
                    subnet,
                    mtu: opts.mtu,
                    egress: opts.egress,
                })?;
            }
        }
        let mut st = self.lock();
        if let Some((other, _)) = st
            .networks
            .iter()
            .find(|(id, n)| **n == name && **id != r.network_id)
        {
            return Err(DriverError {
                status: 409,
                msg: format!("cluster network {name} already backs Docker network {other} on this host"),
            });
        }
        st.networks.insert(r.network_id, name);
        st.save()?;
        Ok(json!({}))
    }

    fn create_endpoint(&self, r: CreateEndpoint) -> Result<Value, DriverError> {
        check_id("NetworkID", &r.network_id)?;
        check_id("EndpointID", &r.endpoint_id)?;
        let network = self.network_of(&r.network_id)?;
        let iface = r.interface.unwrap_or_default();
        let address = match (iface.address.is_empty(), iface.address_ipv6.is_empty()) {
            (false, _) => iface.address,
            (true, false) => iface.address_ipv6,
            (true, true) => {
                return Err(DriverError::bad(
                    "endpoint without an address: use --ipam-driver overlayd for the network",
                ))
            }
        };
        if crate::cni::split_cidr(&address).is_none() {
            return Err(DriverError::bad(format!("bad endpoint address {address:?}")));
        }
        let (mac, reply) = if iface.mac_address.is_empty() {
            let m = format_mac(derived_mac(&r.endpoint_id));
            (m.clone(), json!({ "Interface": { "MacAddress": m } }))
        } else {
            let m = parse_mac(&iface.mac_address)
                .ok_or_else(|| DriverError::bad(format!("bad MAC address {:?}", iface.mac_address)))?;
            (format_mac(m), json!({}))
        };
        let short = &r.endpoint_id[..10];
        let ep = Endpoint {
            network_id: r.network_id,
            network,
            address,
            mac,
            host_ifname: format!("ovh{short}"),
            peer_ifname: format!("ovc{short}"),
            joined: false,
        };
        let mut st = self.lock();
        if let Some((other, _)) = st
            .endpoints
            .iter()
            .find(|(id, e)| e.host_ifname == ep.host_ifname && **id != r.endpoint_id)
        {
            return Err(DriverError {
                status: 409,
                msg: format!("endpoint {other} already uses veth {}: retry", ep.host_ifname),
            });
        }
        st.endpoints.insert(r.endpoint_id, ep);
        st.save()?;
        Ok(reply)
    }

    fn join(&self, r: EndpointRef) -> Result<Value, DriverError> {
        check_id("EndpointID", &r.endpoint_id)?;
        let ep = self
            .lock()
            .endpoints
            .get(&r.endpoint_id)
            .cloned()
            .ok_or_else(|| DriverError::not_found(format!("no endpoint {}", r.endpoint_id)))?;
        if ep.network_id != r.network_id {
            return Err(DriverError::bad(format!(
                "endpoint {} belongs to network {}, not {}",
                r.endpoint_id, ep.network_id, r.network_id
            )));
        }
        let info = self.info(&ep.network)?;
        if !ep.joined {
            let ip = crate::cni::split_cidr(&ep.address)
                .map(|(ip, _)| ip)
                .ok_or_else(|| DriverError::bad(format!("bad endpoint address {:?}", ep.address)))?;
            let mac = parse_mac(&ep.mac).ok_or_else(|| DriverError::bad(format!("bad MAC {:?}", ep.mac)))?;
            self.backend
                .create_veth(&ep.network, &ep.host_ifname, &ep.peer_ifname, mac, ip)?;
            let mut st = self.lock();
            if let Some(e) = st.endpoints.get_mut(&r.endpoint_id) {
                e.joined = true;
            }
            st.save()?;
        }
        let mut reply = json!({
            "InterfaceName": { "SrcName": ep.peer_ifname, "DstPrefix": "eth" },
            // Without egress there is no gateway; this keeps Docker from adding its docker_gwbridge.
            "DisableGatewayService": !info.egress,
        });
        match info.gateway.filter(|_| info.egress) {
            Some(IpAddr::V4(g)) => reply["Gateway"] = json!(g.to_string()),
            Some(IpAddr::V6(g)) => reply["GatewayIPv6"] = json!(g.to_string()),
            None => {}
        }
        Ok(reply)
    }

    fn leave(&self, r: EndpointRef) -> Result<Value, DriverError> {
        check_id("EndpointID", &r.endpoint_id)?;
        self.unplug(&r.endpoint_id, false)?;
        Ok(json!({}))
    }

    fn delete_endpoint(&self, r: EndpointRef) -> Result<Value, DriverError> {
        check_id("EndpointID", &r.endpoint_id)?;
        self.unplug(&r.endpoint_id, true)?;
        Ok(json!({}))
    }

    /// Delete the endpoint's veth if it exists; forget the endpoint if `forget`. Unknown endpoints: done.
    fn unplug(&self, id: &str, forget: bool) -> Result<(), DriverError> {
        let Some(ep) = self.lock().endpoints.get(id).cloned() else {
            return Ok(());
        };
        if ep.joined {
            self.backend.delete_veth(&ep.host_ifname)?;
        }
        let mut st = self.lock();
        if forget {
            st.endpoints.remove(id);
        } else if let Some(e) = st.endpoints.get_mut(id) {
            e.joined = false;
        }
        st.save()?;
        Ok(())
    }

    fn network_of(&self, network_id: &str) -> Result<String, DriverError> {
        self.lock().networks.get(network_id).cloned().ok_or_else(|| {
            DriverError::not_found(format!(
                "Docker network {network_id} is unknown to overlayd (was it created while overlayd's state dir was elsewhere? remove and recreate it)"
            ))
        })
    }

    pub(crate) fn info(&self, name: &str) -> Result<NetworkInfo, DriverError> {
        self.backend
            .networks()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| {
                DriverError::not_found(format!(
                    "no cluster network {name} (removed with overlayctl network rm?)"
                ))
            })
    }
}

/// The options of `docker network create -o …`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub name: Option<String>,
    pub vni: Option<u32>,
    pub mtu: Option<u32>,
    pub egress: bool,
}

pub(crate) fn generic_options(options: &HashMap<String, Value>) -> Result<Options, DriverError> {
    let mut out = Options::default();
    let Some(generic) = options.get(api::GENERIC_OPTIONS) else {
        return Ok(out);
    };
    let Some(map) = generic.as_object() else {
        return Err(DriverError::bad("driver options are not an object"));
    };
    for (k, v) in map {
        let v = v
            .as_str()
            .ok_or_else(|| DriverError::bad(format!("driver option {k} is not a string")))?;
        match k.as_str() {
            "network" => {
                if !crate::cni::valid_network_name(v) {
                    return Err(DriverError::bad(format!(
                        "-o network={v}: 1-15 of letters, digits, '_', '.', '-'"
                    )));
                }
                out.name = Some(v.to_string());
            }
            "vni" => match v.parse::<u32>() {
                Ok(n) if (1..1 << 24).contains(&n) => out.vni = Some(n),
                _ => return Err(DriverError::bad(format!("-o vni={v}: a VNI is 1..16777215"))),
            },
            "mtu" => match v.parse::<u32>() {
                Ok(n) if (576..=65535).contains(&n) => out.mtu = Some(n),
                _ => return Err(DriverError::bad(format!("-o mtu={v}: 576..65535"))),
            },
            "egress" => match v {
                "true" | "1" | "yes" => out.egress = true,
                "false" | "0" | "no" => out.egress = false,
                _ => return Err(DriverError::bad(format!("-o egress={v}: true or false"))),
            },
            other => {
                return Err(DriverError::bad(format!(
                    "unknown driver option {other}: overlayd knows {KNOWN_OPTIONS:?}"
                )))
            }
        }
    }
    Ok(out)
}

/// A locally administered unicast MAC derived from the endpoint id.
pub(crate) fn derived_mac(id: &str) -> [u8; 6] {
    let a = fnv1a(id).to_be_bytes();
    let b = fnv1a(&format!("{id}/mac")).to_be_bytes();
    [0x02, a[0], a[1], a[2], a[3], b[0]]
}

pub(crate) fn format_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || out[0] & 1 == 1 {
        return None;
    }
    Some(out)
}
