//! Docker's remote network driver and remote IPAM driver (libnetwork `docs/remote.md`, `docs/ipam.md`),
//! backed by overlayd networks.
//!
//! Layers: [`Driver::handle`] is a pure request → response function over a [`DockerBackend`] (the daemon's
//! networks, IPAM and veth wiring) plus the persisted endpoint state ([`state`]); [`listen`] is the HTTP
//! shell served at `--docker-plugin ADDR`. Every request body comes from a local client and is checked
//! before use; a bad one gets `{"Err": "..."}`, which Docker shows to the user.
//!
//! Naming (DECISIONS "Networks and IPAM"): Docker never tells a driver its network's name, so the cluster
//! network is named by the driver option `-o network=NAME` or the IPAM option `--ipam-opt network=NAME`;
//! without them an existing network with the same subnet is used, else one named after a hash of the subnet
//! is created, so the same `docker network create` on every host lands on the same cluster network.
//! `docker network rm` forgets the Docker network on this host only; the cluster network stays (other hosts
//! may use it) until `overlayctl network rm`.

pub mod api;
pub mod backend;
pub mod ipam;
pub mod listen;
pub mod network;
pub mod state;

pub use crate::ops::OpsError;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

pub use listen::{DockerAddr, DEFAULT_DOCKER_PLUGIN};
pub use state::{Endpoint, State, StateError};

/// What the driver needs from the daemon. Calls run on a blocking thread (the listener uses
/// `spawn_blocking`), so an implementation may block, e.g. while a block grant is awaited.
pub trait DockerBackend: Send + Sync + 'static {
    /// Every network the daemon knows (as `GET /v1/networks`).
    fn networks(&self) -> Result<Vec<NetworkInfo>, OpsError>;
    /// Create a cluster network (as `POST /v1/networks`); `Conflict` if the name or VNI is taken with
    /// other parameters. Must succeed (idempotent) when the same definition already exists: the same
    /// `docker network create` may run on two hosts before the first definition has spread.
    fn create_network(&self, def: &NetworkDef) -> Result<NetworkInfo, OpsError>;
    /// An address from this host's block(s) of `network`; `want` asks for that one (`docker run --ip`).
    /// `Unavailable` when no block can be granted now.
    fn allocate_address(&self, network: &str, want: Option<IpAddr>) -> Result<IpAddr, OpsError>;
    /// Give an address back (unknown addresses: `Ok`).
    fn release_address(&self, network: &str, ip: IpAddr) -> Result<(), OpsError>;
    /// Create the veth pair `host_ifname`/`peer_ifname` with the network's MTU, `mac` on the peer end,
    /// plug the host end into the network's bridge and set it up. Docker moves the peer end into the
    /// container, renames it and puts `ip` on it itself; `ip` is passed so the daemon can advertise the
    /// binding. A leftover pair of the same name (crash between Join and Leave) is replaced. Returns the
    /// MTU used.
    fn create_veth(
        &self,
        network: &str,
        host_ifname: &str,
        peer_ifname: &str,
        mac: [u8; 6],
        ip: IpAddr,
    ) -> Result<u32, OpsError>;
    /// Delete the veth pair whose host end is `host_ifname` (and forget its IP→MAC binding); `Ok` if it is
    /// already gone. The address itself is released by IPAM `ReleaseAddress` ([`Self::release_address`]).
    fn delete_veth(&self, host_ifname: &str) -> Result<(), OpsError>;
}

/// A network as the daemon reports it (the fields of `GET /v1/networks` the driver uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub vni: u32,
    pub subnet: Option<ipnet::IpNet>,
    pub mtu: u32,
    pub egress: bool,
    /// The anycast gateway (egress only).
    pub gateway: Option<IpAddr>,
}

/// A network to create (body of `POST /v1/networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::IpNet,
    pub mtu: Option<u32>,
    pub egress: bool,
}

/// One answer to Docker: HTTP status and a JSON body (`{"Err": …}` on failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn ok(v: serde_json::Value) -> Self {
        Reply {
            status: 200,
            body: v.to_string(),
        }
    }

    pub fn err(status: u16, msg: impl std::fmt::Display) -> Self {
        Reply {
            status,
            body: serde_json::json!({ "Err": msg.to_string() }).to_string(),
        }
    }
}

/// Why a request was refused (status + message for `{"Err"}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct DriverError {
    pub status: u16,
    pub msg: String,
}

impl DriverError {
    pub fn bad(msg: impl Into<String>) -> Self {
        DriverError {
            status: 400,
            msg: msg.into(),
        }
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        DriverError {
            status: 404,
            msg: msg.into(),
        }
    }
}

impl From<OpsError> for DriverError {
    fn from(e: OpsError) -> Self {
        DriverError {
            status: e.http_status(),
            msg: format!("overlayd: {e}"),
        }
    }
}

impl From<StateError> for DriverError {
    fn from(e: StateError) -> Self {
        DriverError {
            status: 500,
            msg: format!("overlayd: {e}"),
        }
    }
}

/// The driver: backend + endpoint state.
#[derive(Debug)]
pub struct Driver<B> {
    pub(crate) backend: B,
    pub(crate) state: Mutex<State>,
}

impl<B: DockerBackend> Driver<B> {
    /// A driver whose endpoint state lives in `<state_dir>/docker.json` (loaded now if present); `None`
    /// keeps it in memory only (tests).
    pub fn new(backend: B, state_dir: Option<&Path>) -> Result<Self, StateError> {
        let state = match state_dir {
            Some(d) => State::load(d)?,
            None => State::default(),
        };
        Ok(Driver {
            backend,
            state: Mutex::new(state),
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A copy of the endpoint state (diagnostics, tests).
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated (updates are single assignments),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve one plugin call: `path` is the HTTP path (`/NetworkDriver.Join`), `body` the JSON request.
    pub fn handle(&self, path: &str, body: &[u8]) -> Reply {
        let r = match path {
            "/Plugin.Activate" => Ok(serde_json::json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            p if p.starts_with("/NetworkDriver.") => self.network_call(&p["/NetworkDriver.".len()..], body),
            p if p.starts_with("/IpamDriver.") => self.ipam_call(&p["/IpamDriver.".len()..], body),
            _ => Err(DriverError::not_found(format!(
                "{path}: not a Docker plugin method overlayd serves"
            ))),
        };
        match r {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(e.status, e.msg),
        }
    }
}

/// Parse a JSON request body, or refuse with 400 naming the method.
pub(crate) fn parse<'a, T: serde::Deserialize<'a>>(method: &str, body: &'a [u8]) -> Result<T, DriverError> {
    // Some calls (GetCapabilities) may come with an empty body.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| DriverError::bad(format!("{method}: malformed request: {e}")))
}

/// Docker ids (network, endpoint): 12-128 ASCII letters and digits (Docker sends 64 hex digits).
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), DriverError> {
    if (12..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(DriverError::bad(format!("{what} {id:?} is not a Docker id")))
    }
}

/// FNV-1a, for names and VNIs every host derives alike.
pub(crate) fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The cluster network name used for a subnet when no `network=NAME` option is given.
pub fn derived_name(subnet: &ipnet::IpNet) -> String {
    format!("d{:08x}", fnv1a(&subnet.trunc().to_string()))
}

/// The VNI used for a network created without `-o vni=N`: 1..2^24-1 derived from the name, so every host
/// derives the same one.
pub fn derived_vni(name: &str) -> u32 {
    fnv1a(name) % ((1 << 24) - 1) + 1
}

/// The anycast gateway of a subnet: its first host address.
pub fn gateway_of(subnet: &ipnet::IpNet) -> Option<IpAddr> {
    let net = subnet.trunc();
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() <= 30 => {
            Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(n.network()) + 1)))
        }
        ipnet::IpNet::V6(n) if n.prefix_len() <= 126 => {
            Some(IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n.network()) + 1)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
