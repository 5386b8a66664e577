//! Create, remove and list networks (issue 10 §1). Cluster mode: create and rm go through the control plane,
//! which every member follows (the cluster glue builds or removes the bridge and TAP); we wait until this
//! host has done so, so that an `attach` right after a `network create` finds the network. Static mode:
//! networks are declared by `--network`, so create and rm are refused naming the flag.

use super::{Ops, OpsError};
use control::catalog::NetworkError;
use control::transport::TransportError;
use control::{ControlError, NetworkDef};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// How long create/rm wait for this host to build or remove the network's devices.
pub const LOCAL_DEADLINE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// `POST /v1/networks`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    pub vni: u32,
    pub subnet: IpNet,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub egress: bool,
    /// IPAM block size (default /26 for IPv4, /122 for IPv6).
    #[serde(default)]
    pub block_prefix: Option<u8>,
}

/// One network as `overlayctl network ls --json` prints it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    pub name: String,
    pub vni: u32,
    pub subnet: Option<String>,
    pub mtu: u32,
    pub bridge: String,
    pub tap: String,
    pub egress: bool,
    pub gateway: Option<IpAddr>,
    /// This host's IPAM blocks of the network (none in static mode).
    pub blocks: Vec<String>,
}

impl NetworkView {
    /// Network `n` with this host's `blocks` of it.
    pub fn new(n: crate::observe::NetworkInfo, blocks: &[IpNet]) -> NetworkView {
        NetworkView {
            blocks: blocks.iter().map(ToString::to_string).collect(),
            name: n.name,
            vni: n.vni.get(),
            subnet: n.subnet.map(|s| s.to_string()),
            mtu: n.mtu,
            bridge: n.bridge,
            tap: n.tap,
            egress: n.egress,
            gateway: n.gateway,
        }
    }
}

impl Ops {
    /// The networks this host serves, with its blocks of each.
    pub fn list_networks(&self) -> Vec<NetworkView> {
        self.networks
            .infos()
            .into_iter()
            .map(|n| {
                let blocks = self.blocks_of(&n.name);
                NetworkView::new(n, &blocks)
            })
            .collect()
    }

    fn view(&self, name: &str) -> Option<NetworkView> {
        self.list_networks().into_iter().find(|n| n.name == name)
    }

    /// `network create`: define the network cluster-wide and wait (≤ [`LOCAL_DEADLINE`]) until this host
    /// serves it. An identical definition is a no-op that succeeds.
    pub async fn create_network(&self, req: CreateRequest) -> Result<NetworkView, OpsError> {
        let control = self.control()?;
        let def = NetworkDef::new(
            &req.name,
            req.vni,
            req.subnet,
            req.mtu,
            req.egress,
            req.block_prefix,
        )
        .map_err(network_error)?;
        // The checks every member applies when it builds the devices: refuse here rather than there.
        let spec = crate::cluster::apply::spec_of(&def).map_err(|e| OpsError::BadRequest(e.to_string()))?;
        // A network declared on this host (--network, legacy flags) must not clash with the new one.
        for cur in self.networks.specs().into_iter().filter(|s| *s != spec) {
            if let Err(e) = crate::netspec::check_collisions(&spec, [&cur]) {
                return Err(OpsError::Conflict(format!(
                    "{e} (network {} is served on this host)",
                    cur.name
                )));
            }
        }
        control.create_network(def).await.map_err(transport_error)?;
        let deadline = tokio::time::Instant::now() + LOCAL_DEADLINE;
        loop {
            if self.networks.spec(&spec.name).is_some_and(|s| s == spec) {
                if let Some(v) = self.view(&spec.name) {
                    return Ok(v);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OpsError::Internal(format!(
                    "network {} is defined in the cluster but this host did not bring up its devices within {LOCAL_DEADLINE:?}: see overlayd's log",
                    spec.name
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `network rm`: refused (409) while namespaces are attached to it here or endpoints of it exist on other
    /// hosts (MACs they advertise on it), unless `force`, which detaches them everywhere first. Waits (≤ [`LOCAL_DEADLINE`]) until this host has removed its devices.
    pub async fn remove_network(&self, name: &str, force: bool) -> Result<(), OpsError> {
        let control = self.control()?;
        let attached = self
            .attachments
            .list()
            .into_iter()
            .filter(|a| a.network == name)
            .count();
        if attached > 0 && !force {
            return Err(OpsError::Conflict(format!(
                "network {name} has {attached} attached namespace(s): detach them first (`overlayctl detach`) or use `network rm {name} --force`, which detaches them"
            )));
        }
        // Endpoints on other hosts: the MACs other members advertise on this network (their attachments,
        // Docker and CNI endpoints). `rm` would detach them all on their hosts, so it needs `--force` too.
        let remote = self.networks.table().by_name(name).map_or(0, |n| {
            n.fdb
                .rows(std::time::Instant::now())
                .iter()
                .filter(|r| r.origin == dataplane::fdb::Origin::Control)
                .count()
        });
        if remote > 0 && !force {
            return Err(OpsError::Conflict(format!(
                "network {name} has {remote} endpoint(s) on other hosts: detach them there first or use `network rm {name} --force`, which detaches them on every host"
            )));
        }
        let declared_here = self.networks.spec(name).is_some();
        if let Err(e) = control.remove_network(name).await {
            return Err(match transport_error(e) {
                OpsError::NotFound(_) if declared_here => OpsError::Conflict(format!(
                    "network {name} is declared on this host (--network or the legacy flags), not in the cluster: remove the flag and restart overlayd"
                )),
                e => e,
            });
        }
        // Every member (this one included) detaches the network's namespaces, then removes its devices.
        let deadline = tokio::time::Instant::now() + LOCAL_DEADLINE;
        while self.networks.spec(name).is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

/// A refused definition, as an operation error.
pub fn network_error(e: NetworkError) -> OpsError {
    let m = e.to_string();
    match e {
        NetworkError::Name(_)
        | NetworkError::Vni(_)
        | NetworkError::Subnet(_)
        | NetworkError::BlockPrefix { .. }
        | NetworkError::Mtu(_) => OpsError::BadRequest(m),
        NetworkError::NameExists { .. } | NetworkError::VniInUse { .. } | NetworkError::Full => {
            OpsError::Conflict(m)
        }
        NetworkError::NoSuchNetwork(_) => OpsError::NotFound(m),
        NetworkError::SubnetFull(_) => OpsError::Conflict(m),
    }
}

/// A control-plane command's failure, as an operation error.
pub fn transport_error(e: TransportError) -> OpsError {
    match e {
        TransportError::Control(ControlError::Network(n)) => network_error(n),
        TransportError::Control(e @ ControlError::TooManyBlocks(_)) => OpsError::Conflict(e.to_string()),
        TransportError::Control(e @ (ControlError::Left | ControlError::NoAdmitter)) => {
            OpsError::Unavailable(e.to_string())
        }
        e @ TransportError::Stopped => OpsError::Unavailable(e.to_string()),
        e => OpsError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        let s = |e: NetworkError| network_error(e).http_status();
        assert_eq!(s(NetworkError::Vni(0)), 400);
        assert_eq!(s(NetworkError::Name("x y".into())), 400);
        assert_eq!(
            s(NetworkError::VniInUse {
                vni: 5,
                by: "a".into()
            }),
            409
        );
        assert_eq!(s(NetworkError::NoSuchNetwork("a".into())), 404);
        assert_eq!(transport_error(TransportError::Stopped).http_status(), 503);
    }

    #[test]
    fn create_request_is_strict() {
        let r: CreateRequest =
            serde_json::from_str(r#"{"name":"blue","vni":300,"subnet":"10.30.0.0/16"}"#).unwrap();
        assert_eq!((r.mtu, r.egress, r.block_prefix), (None, false, None));
        assert!(serde_json::from_str::<CreateRequest>(r#"{"name":"blue","vni":300}"#).is_err());
        assert!(serde_json::from_str::<CreateRequest>(
            r#"{"name":"blue","vni":300,"subnet":"10.30.0.0/16","bogus":1}"#
        )
        .is_err());
    }
}
