//! The admin API: one HTTP/JSON API (`overlayctl` is its client) served on two listeners.
//!
//! - The TCP address `--admin` (loopback only, any local user may connect): **read-only** endpoints only. It
//!   checks the `Host` header against DNS rebinding, caps connections, request size and time, and answers a
//!   privileged endpoint with 403 naming the admin socket.
//! - The Unix socket `--admin-socket` (mode 0600, callers' SO_PEERCRED checked: root or overlayd's own uid):
//!   every endpoint, including the join token and every operation that changes state.
//!
//! Which endpoint is which is decided in exactly one place, [`ROUTES`]. A new endpoint that reveals a secret
//! or changes anything is `Access::Privileged`; nothing else needs to know.
//! Must never: serve a `Privileged` route on TCP, or block the data plane (everything here only reads shared
//! state).

mod attach;
mod handlers;
pub mod http;
pub mod networks;
mod routes;
mod serve;
pub mod socket;
mod stream;
pub mod watch;

pub use handlers::Reply;
pub use http::{is_loopback_host, parse_request, Limits, Method, Request, Response};
pub use routes::{find_route, Access, Endpoint, Route, ROUTES};
pub use serve::{serve_tcp, serve_unix};
pub use socket::{AdminSocket, PeerPolicy, DEFAULT_ADMIN_SOCKET};

use dataplane::engine::PeerSet;
use dataplane::fdb::Origin;
use dataplane::wire::MacAddr;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Which listener a request came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The TCP address: read-only routes, `Host` checked.
    Tcp,
    /// The Unix socket; `refused` holds the refusal when the caller's credentials are not allowed.
    Socket { refused: Option<String> },
}

/// One FDB row as `overlayctl fdb --json` prints it.
#[derive(Serialize, Debug)]
pub struct FdbEntryJson {
    pub network: String,
    pub vni: u32,
    pub mac: MacAddr,
    pub vtep: IpAddr,
    pub origin: Origin,
    pub age_s: u64,
}

/// One peer as `overlayctl peers --json` prints it.
#[derive(Serialize, Debug)]
pub struct PeerJson {
    pub id: String,
    pub addr: IpAddr,
    pub vtep: IpAddr,
    /// Static peers: `reachable` (a datagram arrived within the last 30 s) or `silent`.
    pub state: &'static str,
    pub generation: u64,
    /// Seconds since its last datagram (probe replies included); absent if none arrived yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_s: Option<f64>,
}

/// What the endpoints can read. Everything is shared with the data plane; nothing here blocks it.
#[derive(Debug)]
pub struct AdminState {
    /// The networks served: their FDBs and counters.
    pub table: Arc<dataplane::network::NetworkTable>,
    /// Static peers (static mode) or alive members (cluster mode).
    pub peers: Arc<PeerSet>,
    /// Cluster membership (`None` in static mode).
    pub members: crate::cluster::Members,
    /// On admitters: the join token and its rotation.
    pub admission: Option<Arc<control::transport::Admission>>,
    /// Cluster mode: the state dir (to name the admitters when this node is not one).
    pub cluster_state: Option<control::auth::StateDir>,
    /// Cluster mode: counters of the QUIC port, shown as `quic` in stats.
    pub quic: Option<Arc<control::exposure::QuicStats>>,
    /// The admin socket's path, named in refusals on TCP.
    pub socket_path: PathBuf,
    /// `overlayctl revoke`: requests to the control plane (`None` in static mode).
    pub revoke: Option<RevokeTx>,
    /// Control-plane counters (cluster mode), shown under `control` in `/v1/stats`.
    pub control_stats: crate::cluster::ControlCounters,
    /// Network names, liveness and measurements for metrics, trace and diag.
    pub observe: Arc<crate::observe::Observe>,
    /// Network create/rm, attach/detach, addresses: shared with the Docker driver. `None` only in unit
    /// tests of the read-only views.
    pub ops: Option<Arc<crate::ops::Ops>>,
    /// The FDB change feed of `GET /v1/fdb/watch` (its task: [`watch::FdbWatch::run`]).
    pub fdb_watch: Arc<watch::FdbWatch>,
}

/// A revoke request to the control plane: the node id and where to send the outcome (text) or error.
pub type RevokeTx = tokio::sync::mpsc::Sender<(
    control::NodeId,
    tokio::sync::oneshot::Sender<Result<String, String>>,
)>;

#[cfg(test)]
mod tests;
