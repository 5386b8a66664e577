//! `IpamDriver.*`: Docker pools → cluster network subnets, addresses → this host's IPAM blocks.
//!
//! Pool ids are self-describing, `NAME@SUBNET` (or `@SUBNET` without `--ipam-opt network=NAME`), so they
//! stay valid across restarts of Docker and overlayd without state. The gateway Docker asks for at network
//! creation is the subnet's first host address (the anycast gateway of egress networks), never allocated
//! from a block.

use super::api::{self, PoolId, ReleaseAddress, RequestAddress, RequestPool};
use super::{gateway_of, parse, DockerBackend, Driver, DriverError};
use serde_json::{json, Value};
use std::net::IpAddr;

/// A parsed pool id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: Option<String>,
    pub subnet: ipnet::IpNet,
}

impl Pool {
    pub fn id(&self) -> String {
        format!("{}@{}", self.name.as_deref().unwrap_or(""), self.subnet)
    }

    pub fn parse(id: &str) -> Result<Pool, DriverError> {
        let bad = || DriverError::bad(format!("PoolID {id:?} is not one of overlayd's"));
        let (name, subnet) = id.split_once('@').ok_or_else(bad)?;
        let subnet: ipnet::IpNet = subnet.parse().map_err(|_| bad())?;
        let name = match name {
            "" => None,
            n if crate::cni::valid_network_name(n) => Some(n.to_string()),
            _ => return Err(bad()),
        };
        Ok(Pool {
            name,
            subnet: subnet.trunc(),
        })
    }

    fn gateway(&self) -> Result<IpAddr, DriverError> {
        gateway_of(&self.subnet)
            .ok_or_else(|| DriverError::bad(format!("subnet {} is too small", self.subnet)))
    }
}

impl<B: DockerBackend> Driver<B> {
    pub(crate) fn ipam_call(&self, method: &str, body: &[u8]) -> Result<Value, DriverError> {
        match method {
            "GetCapabilities" => Ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false })),
            "GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": api::LOCAL_SPACE,
                "GlobalDefaultAddressSpace": api::GLOBAL_SPACE,
            })),
            "RequestPool" => self.request_pool(parse(method, body)?),
            "ReleasePool" => {
                let r: PoolId = parse(method, body)?;
                let pool = Pool::parse(&r.pool_id)?;
                if pool.name.is_some() {
                    let mut st = self.lock();
                    if st.named_pools.remove(&pool.subnet.to_string()).is_some() {
                        st.save()?;
                    }
                }
                Ok(json!({}))
            }
            "RequestAddress" => self.request_address(parse(method, body)?),
            "ReleaseAddress" => self.release_address(parse(method, body)?),
            _ => Err(DriverError::not_found(format!(
                "IpamDriver.{method} is not implemented by overlayd"
            ))),
        }
    }

    fn request_pool(&self, r: RequestPool) -> Result<Value, DriverError> {
        if !r.sub_pool.is_empty() {
            return Err(DriverError::bad(
                "--ip-range is not supported: overlayd hands out per-host blocks of the subnet",
            ));
        }
        let opts = r.options.unwrap_or_default();
        let mut name = None;
        for (k, v) in &opts {
            match k.as_str() {
                "network" if crate::cni::valid_network_name(v) => name = Some(v.clone()),
                "network" => {
                    return Err(DriverError::bad(format!(
                        "--ipam-opt network={v}: 1-15 of letters, digits, '_', '.', '-'"
                    )))
                }
                other => {
                    return Err(DriverError::bad(format!(
                        "unknown IPAM option {other}: overlayd knows \"network\""
                    )))
                }
            }
        }
        let asked: Option<ipnet::IpNet> = match r.pool.as_str() {
            "" => None,
            p => Some(
                p.parse::<ipnet::IpNet>()
                    .map_err(|_| DriverError::bad(format!("bad subnet {p:?}")))?
                    .trunc(),
            ),
        };
        let existing = match &name {
            Some(n) => self.backend.networks()?.into_iter().find(|x| &x.name == n),
            None => None,
        };
        let subnet = match (&name, asked, existing) {
            (Some(n), asked, Some(e)) => {
                let Some(have) = e.subnet.map(|s| s.trunc()) else {
                    return Err(DriverError::bad(format!(
                        "cluster network {n} has no subnet, so overlayd cannot assign addresses on it"
                    )));
                };
                if let Some(a) = asked.filter(|a| *a != have) {
                    return Err(DriverError {
                        status: 409,
                        msg: format!(
                            "cluster network {n} has subnet {have}, not {a}: use its subnet or omit --subnet"
                        ),
                    });
                }
                have
            }
            (Some(n), None, None) => {
                return Err(DriverError::not_found(format!(
                    "no cluster network {n} yet: give --subnet where it is created first"
                )))
            }
            (_, Some(a), _) => a,
            (None, None, _) => {
                return Err(DriverError::bad(
                    "give --subnet, or --ipam-opt network=NAME to use an existing cluster network",
                ))
            }
        };
        if subnet.addr().is_ipv6() != r.v6 {
            return Err(DriverError::bad(format!(
                "subnet {subnet} is not of the family Docker asked for (V6={})",
                r.v6
            )));
        }
        let pool = Pool {
            name: name.clone(),
            subnet,
        };
        pool.gateway()?;
        if let Some(n) = name {
            let mut st = self.lock();
            st.named_pools.insert(subnet.to_string(), n);
            st.save()?;
        }
        Ok(json!({ "PoolID": pool.id(), "Pool": subnet.to_string(), "Data": {} }))
    }

    /// The cluster network a pool's addresses come from: by name, else by subnet.
    fn pool_network(&self, pool: &Pool) -> Result<Option<String>, DriverError> {
        if let Some(n) = &pool.name {
            return Ok(Some(n.clone()));
        }
        Ok(self
            .backend
            .networks()?
            .into_iter()
            .find(|n| n.subnet.map(|s| s.trunc()) == Some(pool.subnet))
            .map(|n| n.name))
    }

    fn request_address(&self, r: RequestAddress) -> Result<Value, DriverError> {
        let pool = Pool::parse(&r.pool_id)?;
        let gateway = pool.gateway()?;
        let prefix = pool.subnet.prefix_len();
        let want = match r.address.as_str() {
            "" => None,
            a => {
                let ip: IpAddr = crate::cni::split_cidr(a)
                    .map(|(ip, _)| ip)
                    .or_else(|| a.parse().ok())
                    .ok_or_else(|| DriverError::bad(format!("bad address {a:?}")))?;
                if !pool.subnet.contains(&ip) {
                    return Err(DriverError::bad(format!("{ip} is not in {}", pool.subnet)));
                }
                Some(ip)
            }
        };
        let is_gateway = r
            .options
            .as_ref()
            .and_then(|o| o.get(api::REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == api::GATEWAY_TYPE);
        if is_gateway {
            if let Some(w) = want.filter(|w| *w != gateway) {
                return Err(DriverError::bad(format!(
                    "--gateway {w}: overlayd's gateway is the subnet's first address, {gateway}"
                )));
            }
            return Ok(json!({ "Address": format!("{gateway}/{prefix}"), "Data": {} }));
        }
        if want == Some(gateway) {
            return Err(DriverError::bad(format!("{gateway} is the network's gateway")));
        }
        let network = self.pool_network(&pool)?.ok_or_else(|| {
            DriverError::not_found(format!("no cluster network has subnet {}", pool.subnet))
        })?;
        let ip = self.backend.allocate_address(&network, want)?;
        if !pool.subnet.contains(&ip) {
            return Err(DriverError {
                status: 500,
                msg: format!("overlayd allocated {ip} outside {}", pool.subnet),
            });
        }
        Ok(json!({ "Address": format!("{ip}/{prefix}"), "Data": {} }))
    }

    fn release_address(&self, r: ReleaseAddress) -> Result<Value, DriverError> {
        let pool = Pool::parse(&r.pool_id)?;
        let ip: IpAddr = crate::cni::split_cidr(&r.address)
            .map(|(ip, _)| ip)
            .or_else(|| r.address.parse().ok())
            .ok_or_else(|| DriverError::bad(format!("bad address {:?}", r.address)))?;
        if Some(ip) == gateway_of(&pool.subnet) {
            return Ok(json!({}));
        }
        // A network that is gone has no addresses left to release.
        if let Some(network) = self.pool_network(&pool)? {
            match self.backend.release_address(&network, ip) {
                Ok(()) | Err(super::OpsError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(json!({}))
    }
}
