//! The daemon's [`DockerBackend`]: Docker's calls mapped onto the shared operations ([`Ops`]) and the host
//! set-up ([`crate::host::veth`]). The driver calls it on a blocking thread (`spawn_blocking`), so the async
//! operations are run to completion with the runtime's [`Handle::block_on`].

use super::{DockerBackend, NetworkDef, NetworkInfo};
use crate::host::veth;
use crate::ops::networks::CreateRequest;
use crate::ops::{Ops, OpsError};
use dataplane::neigh::Binding;
use dataplane::wire::MacAddr;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::runtime::Handle;

/// [`DockerBackend`] over the daemon's [`Ops`].
#[derive(Debug)]
pub struct OpsBackend {
    ops: Arc<Ops>,
    rt: Handle,
    /// host end of each veth this process created → (network, IP, MAC), to withdraw the binding on delete.
    veths: Mutex<HashMap<String, (String, IpAddr, MacAddr)>>,
}

impl OpsBackend {
    /// `rt` must be the daemon's runtime; the backend is only called from its blocking threads.
    pub fn new(ops: Arc<Ops>, rt: Handle) -> OpsBackend {
        OpsBackend {
            ops,
            rt,
            veths: Mutex::default(),
        }
    }

    fn veths(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, IpAddr, MacAddr)>> {
        self.veths.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn host_err(e: crate::host::HostError) -> OpsError {
    OpsError::Internal(e.to_string())
}

impl DockerBackend for OpsBackend {
    fn networks(&self) -> Result<Vec<NetworkInfo>, OpsError> {
        Ok(self
            .ops
            .list_networks()
            .into_iter()
            .map(|v| NetworkInfo {
                subnet: v.subnet.as_deref().and_then(|s| s.parse().ok()),
                name: v.name,
                vni: v.vni,
                mtu: v.mtu,
                egress: v.egress,
                gateway: v.gateway,
            })
            .collect())
    }

    fn create_network(&self, def: &NetworkDef) -> Result<NetworkInfo, OpsError> {
        let req = CreateRequest {
            name: def.name.clone(),
            vni: def.vni,
            subnet: def.subnet,
            mtu: def.mtu,
            egress: def.egress,
            block_prefix: None,
        };
        let v = self.rt.block_on(self.ops.create_network(req))?;
        Ok(NetworkInfo {
            subnet: v.subnet.as_deref().and_then(|s| s.parse().ok()),
            name: v.name,
            vni: v.vni,
            mtu: v.mtu,
            egress: v.egress,
            gateway: v.gateway,
        })
    }

    fn allocate_address(&self, network: &str, want: Option<IpAddr>) -> Result<IpAddr, OpsError> {
        self.rt
            .block_on(self.ops.allocate_address(network, want))
            .map(|n| n.addr())
    }

    fn release_address(&self, network: &str, ip: IpAddr) -> Result<(), OpsError> {
        self.rt.block_on(self.ops.release_address(network, ip))
    }

    fn create_veth(
        &self,
        network: &str,
        host_ifname: &str,
        peer_ifname: &str,
        mac: [u8; 6],
        ip: IpAddr,
    ) -> Result<u32, OpsError> {
        let (spec, mtu) = self.ops.networks.get(network).ok_or_else(|| {
            OpsError::NotFound(format!(
                "no network named {network:?} on this host (see `overlayctl network ls`)"
            ))
        })?;
        let mac = MacAddr(mac);
        veth::create_local(host_ifname, peer_ifname, &spec.bridge, mtu, mac).map_err(host_err)?;
        // Answer ARP/ND for the container from here on, and advertise it (Local binding).
        if let Some(net) = self.ops.networks.table().by_name(network) {
            net.neigh.learn(Binding { ip, mac }, Instant::now());
        }
        self.veths()
            .insert(host_ifname.to_string(), (network.to_string(), ip, mac));
        tracing::info!(network, host_ifname, %ip, %mac, "docker endpoint wired");
        Ok(mtu)
    }

    fn delete_veth(&self, host_ifname: &str) -> Result<(), OpsError> {
        veth::delete(host_ifname).map_err(host_err)?;
        if let Some((network, ip, mac)) = self.veths().remove(host_ifname) {
            if let Some(net) = self.ops.networks.table().by_name(&network) {
                if net.neigh.lookup(&ip).map(|(m, _)| m) == Some(mac) {
                    net.neigh.remove(&ip);
                }
            }
        }
        Ok(())
    }
}
