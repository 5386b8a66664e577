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
pub mod http;
pub mod networks;
pub mod socket;

pub use http::{is_loopback_host, parse_request, Limits, Method, Request, Response};
pub use socket::{AdminSocket, PeerPolicy, DEFAULT_ADMIN_SOCKET};

use dataplane::engine::PeerSet;
use dataplane::fdb::Origin;
use dataplane::wire::MacAddr;
use http::RawRequest;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served on the TCP address and the socket: data any local user may read.
    ReadOnly,
    /// Served on the Unix socket only (root): secrets and every state change.
    Privileged,
}

/// What a route does; [`AdminState::dispatch`] has one arm per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Fdb,
    Stats,
    Peers,
    Token,
    Revoke,
    Metrics,
    Trace,
    Diag,
    TokenRotate,
    Networks,
    NetworkCreate,
    NetworkRemove,
    Attach,
    Detach,
    Attachments,
}

/// One row of [`ROUTES`]. A `path` ending in `*` matches every path with that prefix plus a non-empty,
/// slash-free tail (the tail is handed to the endpoint, e.g. a network's name).
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
}

const fn route(method: Method, path: &'static str, endpoint: Endpoint, access: Access) -> Route {
    Route {
        method,
        path,
        endpoint,
        access,
    }
}

/// Every admin endpoint and who may call it: the single place that decides what the TCP listener serves.
/// Add `revoke`, `token --rotate`, `network create/rm`, `attach`/`detach` here as `Access::Privileged`
/// (e.g. `route(Method::Post, "/v1/revoke", Endpoint::Revoke, Access::Privileged)`); `metrics`, `trace`,
/// `diag`, `network ls` as `Access::ReadOnly`. `overlayctl` reads this table too, to tell a user without
/// `--admin-socket` that a command needs it.
pub const ROUTES: &[Route] = &[
    route(Method::Get, "/v1/health", Endpoint::Health, Access::ReadOnly),
    route(Method::Get, "/v1/fdb", Endpoint::Fdb, Access::ReadOnly),
    route(Method::Get, "/v1/stats", Endpoint::Stats, Access::ReadOnly),
    route(Method::Get, "/v1/peers", Endpoint::Peers, Access::ReadOnly),
    route(Method::Get, "/v1/token", Endpoint::Token, Access::Privileged),
    // Body: {"node": "<id as in peers --json>"}.
    route(Method::Post, "/v1/revoke", Endpoint::Revoke, Access::Privileged),
    route(Method::Get, "/metrics", Endpoint::Metrics, Access::ReadOnly),
    route(Method::Get, "/v1/trace", Endpoint::Trace, Access::ReadOnly),
    route(Method::Get, "/v1/diag", Endpoint::Diag, Access::ReadOnly),
    route(Method::Get, "/v1/networks", Endpoint::Networks, Access::ReadOnly),
    // Body: {"name","vni","subnet","mtu"?,"egress"?,"block_prefix"?}; cluster mode only.
    route(
        Method::Post,
        "/v1/networks",
        Endpoint::NetworkCreate,
        Access::Privileged,
    ),
    // `DELETE /v1/networks/NAME[?force=true]`.
    route(
        Method::Delete,
        "/v1/networks/*",
        Endpoint::NetworkRemove,
        Access::Privileged,
    ),
    // `overlayctl token --rotate`: a new join secret on an admitter; the old token is refused from then on.
    route(
        Method::Post,
        "/v1/token/rotate",
        Endpoint::TokenRotate,
        Access::Privileged,
    ),
    // Body: {"netns", "network", "ip"?, "mac"?, "ifname"?} → the attachment (CONTRACT "Admin API").
    route(Method::Post, "/v1/attach", Endpoint::Attach, Access::Privileged),
    // Body: {"netns", "network", "ifname"?} → {"detached": bool}; idempotent.
    route(Method::Post, "/v1/detach", Endpoint::Detach, Access::Privileged),
    route(
        Method::Get,
        "/v1/attachments",
        Endpoint::Attachments,
        Access::Privileged,
    ),
];

/// The route for `method path`; `Err(404)` for an unknown path, `Err(405)` for a known path with another method.
pub fn find_route(method: Method, path: &str) -> Result<&'static Route, u16> {
    let mut known_path = false;
    for r in ROUTES {
        if route_matches(r.path, path) {
            if r.method == method {
                return Ok(r);
            }
            known_path = true;
        }
    }
    Err(if known_path { 405 } else { 404 })
}

fn route_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path
            .strip_prefix(prefix)
            .is_some_and(|tail| !tail.is_empty() && !tail.contains('/')),
        None => pattern == path,
    }
}

/// The tail of `path` matched by a `*` route (`/v1/networks/blue` → `blue`).
fn route_tail<'a>(pattern: &str, path: &'a str) -> &'a str {
    pattern
        .strip_suffix('*')
        .and_then(|p| path.strip_prefix(p))
        .unwrap_or("")
}

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
}

/// A revoke request to the control plane: the node id and where to send the outcome (text) or error.
pub type RevokeTx = tokio::sync::mpsc::Sender<(
    control::NodeId,
    tokio::sync::oneshot::Sender<Result<String, String>>,
)>;

impl AdminState {
    /// PRIVILEGED (state-changing): revoke node `id` (hex, as in `peers --json`).
    pub async fn revoke(&self, id: &str) -> Response {
        let Ok(node) = id.parse::<control::NodeId>() else {
            return Response::error(
                400,
                "NODE_ID must be the hex id shown by `overlayctl peers --json`",
            );
        };
        let Some(tx) = &self.revoke else {
            return Response::error(409, "static peers cannot be revoked (this overlayd runs without a cluster); remove the --peer on every host instead");
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        if tx.send((node, done)).await.is_err() {
            return Response::error(503, "the control plane has stopped; restart overlayd");
        }
        match tokio::time::timeout(std::time::Duration::from_secs(3), rx).await {
            Ok(Ok(Ok(outcome))) => {
                Response::ok(serde_json::json!({ "node": node.to_string(), "outcome": outcome }).to_string())
            }
            Ok(Ok(Err(e))) => Response::error(409, &e),
            _ => Response::error(503, "the control plane did not answer; retry"),
        }
    }

    /// The whole request pipeline after reading: parse, check the listener's rules, dispatch.
    pub async fn respond(&self, via: &Via, raw: &RawRequest) -> Response {
        let req = match parse_request(&raw.head) {
            Ok(r) => r,
            Err(e) => return Response::error(e.status(), &e.to_string()),
        };
        if let Via::Socket { refused: Some(why) } = via {
            return Response::error(403, why);
        }
        if *via == Via::Tcp {
            match req.host {
                Some(h) if is_loopback_host(h) => {}
                Some(h) => {
                    return Response::error(
                        403,
                        &format!("Host {h:?} is not a loopback name: the admin endpoint answers only requests for localhost, 127.0.0.1 or [::1] (DNS rebinding protection)"),
                    )
                }
                None if req.http10 => {}
                None => return Response::error(400, "HTTP/1.1 request without a Host header"),
            }
        }
        let route = match find_route(req.method, req.path) {
            Ok(r) => r,
            Err(404) => {
                let paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
                return Response::error(404, &format!("no such route; try {}", paths.join(", ")));
            }
            Err(status) => return Response::error(status, "method not allowed on this route"),
        };
        if route.access == Access::Privileged && *via == Via::Tcp {
            let sock = self.socket_path.display();
            return Response::error(
                403,
                &format!(
                    "{} {} is served only on overlayd's admin socket {sock} (root only), never on the TCP admin address: run `overlayctl --admin-socket {sock} …` as root",
                    route.method.as_str(),
                    route.path
                ),
            );
        }
        let tail = route_tail(route.path, req.path);
        self.dispatch(route.endpoint, tail, req.query, &raw.body).await
    }

    /// Serve one endpoint; `tail` is what a `*` route matched. Access has been checked by the caller.
    pub async fn dispatch(&self, endpoint: Endpoint, tail: &str, query: &str, body: &[u8]) -> Response {
        let now = Instant::now();
        let json = |r: Result<String, serde_json::Error>| match r {
            Ok(body) => Response::ok(body),
            Err(e) => Response::error(500, &e.to_string()),
        };
        match endpoint {
            Endpoint::Health => Response::ok("{\"ok\":true}".into()),
            Endpoint::Fdb => match self.fdb_json(query, now) {
                Ok(rows) => json(serde_json::to_string(&rows)),
                Err(r) => r,
            },
            Endpoint::Networks => json(serde_json::to_string(&self.networks_json())),
            Endpoint::NetworkCreate => self.network_create(body).await,
            Endpoint::NetworkRemove => self.network_remove(tail, query).await,
            Endpoint::Attach => self.attach(body).await,
            Endpoint::Detach => self.detach(body).await,
            Endpoint::Attachments => self.attachments_json(),
            Endpoint::Stats => {
                let mut v = match self.stats_json(query) {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let control = self.control_stats.read().ok().and_then(|c| *c);
                if let (Some(obj), Some(c)) = (v.as_object_mut(), control) {
                    obj.insert("control".into(), serde_json::to_value(c).unwrap_or_default());
                }
                if let (Some(q), Some(obj)) = (&self.quic, v.as_object_mut()) {
                    obj.insert("quic".into(), serde_json::json!(q.snapshot()));
                }
                json(serde_json::to_string(&v))
            }
            Endpoint::Revoke => {
                let node = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["node"].as_str().map(str::to_string));
                match node {
                    Some(id) => self.revoke(&id).await,
                    None => Response::error(400, "body must be {\"node\": \"<id as in peers --json>\"}"),
                }
            }
            Endpoint::Peers => {
                let members = self.members.read().ok().and_then(|m| m.clone());
                if let Some(rows) = members {
                    let rows = serde_json::to_value(rows)
                        .ok()
                        .and_then(|v| v.as_array().cloned())
                        .unwrap_or_default();
                    return match self.with_network_column(rows, query) {
                        Ok(r) => json(serde_json::to_string(&r)),
                        Err(r) => r,
                    };
                }
                let peers: Vec<PeerJson> = self
                    .peers
                    .snapshot()
                    .iter()
                    .map(|a| {
                        let (last_seen_s, state) = self.observe.static_peer_state(*a, now);
                        PeerJson {
                            id: a.to_string(),
                            addr: *a,
                            vtep: *a,
                            state,
                            generation: 0,
                            last_seen_s: last_seen_s.map(|s| (s * 10.0).round() / 10.0),
                        }
                    })
                    .collect();
                let rows = serde_json::to_value(peers)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default();
                match self.with_network_column(rows, query) {
                    Ok(r) => json(serde_json::to_string(&r)),
                    Err(r) => r,
                }
            }
            Endpoint::Metrics => match crate::metrics::render(self) {
                Ok(text) => Response::ok_as(crate::metrics::CONTENT_TYPE, text),
                Err(e) => Response::error(500, &format!("cannot encode metrics: {e}")),
            },
            Endpoint::Trace => match crate::trace::trace(self, query) {
                Ok(t) => json(serde_json::to_string(&t)),
                Err(e) => Response::error(400, &e.to_string()),
            },
            Endpoint::Diag => json(serde_json::to_string(&self.diag())),
            Endpoint::Token => match &self.admission {
                Some(a) => json(serde_json::to_string(
                    &serde_json::json!({ "token": a.token().to_string() }),
                )),
                None => self.not_admitter(),
            },
            Endpoint::TokenRotate => match &self.admission {
                Some(a) => match a.rotate() {
                    Ok(t) => {
                        tracing::info!("join secret rotated; the previous token is no longer accepted");
                        json(serde_json::to_string(
                            &serde_json::json!({ "token": t.to_string() }),
                        ))
                    }
                    Err(e) => Response::error(500, &e.to_string()),
                },
                None => self.not_admitter(),
            },
        }
    }

    /// Run every `diag` check; peers are probed in parallel. Blocks this runtime worker (probes wait for
    /// replies), which a multi-thread runtime is told about.
    fn diag(&self) -> crate::diag::Report {
        let run = || {
            let mut checks = crate::diag::host_checks(self);
            let targets = crate::diag::probe_targets(self);
            let per_peer: Vec<Vec<crate::diag::Check>> = std::thread::scope(|s| {
                let hs: Vec<_> = targets
                    .iter()
                    .map(|p| s.spawn(move || crate::diag::peer_checks(self, *p)))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
            });
            checks.extend(per_peer.into_iter().flatten());
            checks.extend(crate::diag::liveness_checks(self));
            crate::diag::report(checks)
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// `token` and `token --rotate` on a node that is not an admitter: name the admitters it knows.
    fn not_admitter(&self) -> Response {
        if self.is_static() {
            return Response::error(
                404,
                "this overlayd runs in static mode (no cluster), so there is no join token: start the first node with --init-cluster",
            );
        }
        let admitters: Vec<String> = self
            .cluster_state
            .as_ref()
            .and_then(|s| s.load_admitters().ok())
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let named = if admitters.is_empty() {
            "the node started with --init-cluster".to_string()
        } else {
            format!("gossip address {}", admitters.join(", "))
        };
        Response::error(
            409,
            &format!("this node is not an admitter (it holds no CA key or join secret); run `overlayctl --admin-socket … token` on an admitter: {named}"),
        )
    }

    fn is_static(&self) -> bool {
        // The state dir is there from the start in cluster mode; the member list only after the first
        // membership event, which may come after the admin socket answers.
        self.cluster_state.is_none() && self.members.read().map_or(true, |m| m.is_none())
    }
}

/// Serve the TCP admin address until the task is dropped: read-only routes, `Host` checked, bounded.
pub async fn serve_tcp(listener: TcpListener, state: Arc<AdminState>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        match listener.accept().await {
            Ok((s, _)) => admit(&slots, s, &state, Via::Tcp, limits),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serve the admin Unix socket until the task is dropped: every route, for allowed peer credentials only.
pub async fn serve_unix(listener: UnixListener, state: Arc<AdminState>, limits: Limits, policy: PeerPolicy) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let via = Via::Socket {
                    refused: policy.check(&s).err(),
                };
                admit(&slots, s, &state, via, limits);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A stream we can answer without waiting (the 503 of a full listener must not hold a task).
trait TryWrite {
    fn try_write_now(&self, bytes: &[u8]);
}

impl TryWrite for tokio::net::TcpStream {
    fn try_write_now(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

impl TryWrite for tokio::net::UnixStream {
    fn try_write_now(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

/// Serve `s` on its own task if a connection slot is free; otherwise answer 503 at once and close. Shared by
/// both listeners, so the cap tested on the socket is the cap of the TCP address.
fn admit<S>(slots: &Arc<Semaphore>, mut s: S, state: &Arc<AdminState>, via: Via, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + TryWrite + Unpin + Send + 'static,
{
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        s.try_write_now(&Response::error(503, "too many concurrent admin connections; retry").to_bytes());
        return;
    };
    let st = state.clone();
    tokio::spawn(async move {
        serve_conn(&mut s, &st, via, &limits).await;
        drop(permit);
    });
}

async fn serve_conn<S>(s: &mut S, state: &AdminState, via: Via, limits: &Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let resp = match http::read_request(s, limits).await {
        Ok(raw) => state.respond(&via, &raw).await,
        Err(e) => Response::error(e.status(), &e.to_string()),
    };
    http::write_response(s, &resp, limits).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn state(admission: Option<Arc<control::transport::Admission>>, cluster: bool) -> AdminState {
        let now = Instant::now();
        let fdb = Arc::new(dataplane::fdb::Fdb::new(
            8,
            dataplane::fdb::Fdb::DEFAULT_AGEING,
            now,
        ));
        fdb.learn(
            MacAddr([2, 0, 0, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 2]),
            Origin::Learned,
            now,
        );
        AdminState {
            table: Arc::new(
                dataplane::network::NetworkTable::new([Arc::new(
                    dataplane::network::Network::new(
                        "default",
                        dataplane::wire::Vni::new(42).unwrap(),
                        fdb,
                        Arc::new(PeerSet::new([IpAddr::from([10, 0, 0, 2])])),
                    )
                    .with_workers(2),
                )])
                .unwrap(),
            ),
            peers: Arc::new(PeerSet::new([IpAddr::from([10, 0, 0, 2])])),
            members: Arc::new(std::sync::RwLock::new(cluster.then(Vec::new))),
            admission,
            cluster_state: None,
            quic: cluster.then(Arc::default),
            socket_path: PathBuf::from("/run/test/admin.sock"),
            revoke: None,
            control_stats: Arc::new(std::sync::RwLock::new(Some(control::ControlStats {
                seq_refused: 3,
                ..Default::default()
            }))),
            ops: None,
            observe: Arc::new(crate::observe::Observe::new(
                vec![crate::observe::NetworkInfo {
                    name: "default".into(),
                    vni: dataplane::wire::Vni::new(42).unwrap(),
                    bridge: "ovl0".into(),
                    tap: "ovl42".into(),
                    mtu: 1450,
                    subnet: None,
                    egress: false,
                    gateway: None,
                }],
                IpAddr::from([10, 0, 0, 1]),
                cluster,
                Arc::new(dataplane::activity::PeerActivity::new(
                    now,
                    [IpAddr::from([10, 0, 0, 2])],
                )),
            )),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn raw(head: &str) -> RawRequest {
        RawRequest {
            head: head.as_bytes().to_vec(),
            body: Vec::new(),
        }
    }

    fn get(st: &AdminState, via: &Via, path: &str, host: &str) -> Response {
        rt().block_on(st.respond(via, &raw(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))))
    }

    #[test]
    fn the_route_table_is_consistent() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with("/v1/") || a.path == "/metrics", "{}", a.path);
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "duplicate {}",
                    a.path
                );
            }
        }
        assert_eq!(
            find_route(Method::Get, "/v1/token").unwrap().access,
            Access::Privileged
        );
        assert_eq!(find_route(Method::Post, "/v1/fdb").unwrap_err(), 405);
        assert_eq!(find_route(Method::Get, "/v2/x").unwrap_err(), 404);
        // `*` routes: one path segment, handed to the endpoint.
        let r = find_route(Method::Delete, "/v1/networks/blue").unwrap();
        assert_eq!(
            (r.endpoint, r.access),
            (Endpoint::NetworkRemove, Access::Privileged)
        );
        assert_eq!(route_tail(r.path, "/v1/networks/blue"), "blue");
        assert_eq!(find_route(Method::Delete, "/v1/networks/").unwrap_err(), 404);
        assert_eq!(find_route(Method::Delete, "/v1/networks/a/b").unwrap_err(), 404);
        assert_eq!(find_route(Method::Get, "/v1/networks/blue").unwrap_err(), 405);
        let r = find_route(Method::Post, "/v1/networks").unwrap();
        assert_eq!(
            (r.endpoint, r.access),
            (Endpoint::NetworkCreate, Access::Privileged)
        );
        assert_eq!(
            find_route(Method::Get, "/v1/networks").unwrap().access,
            Access::ReadOnly
        );
    }

    #[test]
    fn routes() {
        let st = state(None, false);
        let tcp = Via::Tcp;
        let r = get(&st, &tcp, "/v1/fdb", "127.0.0.1:7947");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["vni"], 42);
        assert_eq!(v[0]["network"], "default");
        let r = get(&st, &tcp, "/v1/fdb?network=default", "127.0.0.1:7947");
        assert_eq!(r.status, 200);
        let r = get(&st, &tcp, "/v1/fdb?network=nope", "127.0.0.1:7947");
        assert_eq!(r.status, 404);
        assert!(r.body.contains("serves default"), "{}", r.body);
        let r = get(&st, &tcp, "/v1/networks", "127.0.0.1:7947");
        assert_eq!(r.status, 200, "read-only: served on TCP");
        let n: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(n[0]["name"], "default");
        assert_eq!(n[0]["bridge"], "ovl0");
        assert_eq!(n[0]["blocks"], serde_json::json!([]));
        let r = get(&st, &tcp, "/v1/peers?network=default", "127.0.0.1:7947");
        let p: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(p[0]["network"], "default", "{}", r.body);
        assert_eq!(v[0]["mac"], "02:00:00:00:00:02");
        assert_eq!(v[0]["vtep"], "10.0.0.2");
        assert_eq!(v[0]["origin"], "learned");
        assert!(v[0]["age_s"].is_u64());
        let s: serde_json::Value =
            serde_json::from_str(&get(&st, &tcp, "/v1/stats", "localhost").body).unwrap();
        for k in ["rx_frames", "tx_frames", "rx_datagrams", "tx_datagrams"] {
            assert_eq!(s[k], 0, "{k}");
        }
        assert!(s["drops"].is_object());
        // `--workers`: each worker's traffic, from its own counters; the totals are their sums.
        let net = st.table.by_name("default").unwrap();
        dataplane::stats::Counters::add(&net.rx.of(1).rx_datagrams, 5);
        dataplane::stats::Counters::add(&net.rx.of(0).rx_datagrams, 2);
        dataplane::stats::Counters::add(&net.tx.of(1).rx_frames, 7);
        let s: serde_json::Value =
            serde_json::from_str(&get(&st, &tcp, "/v1/stats", "localhost").body).unwrap();
        let w = s["workers"].as_array().unwrap();
        assert_eq!(w.len(), 2, "{s}");
        assert_eq!(
            (w[0]["worker"].as_u64(), w[1]["worker"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(
            (w[0]["rx_datagrams"].as_u64(), w[1]["rx_datagrams"].as_u64()),
            (Some(2), Some(5))
        );
        assert_eq!(
            (w[0]["rx_frames"].as_u64(), w[1]["rx_frames"].as_u64()),
            (Some(0), Some(7))
        );
        assert_eq!(
            (s["rx_datagrams"].as_u64(), s["rx_frames"].as_u64()),
            (Some(7), Some(7))
        );
        assert_eq!(get(&st, &tcp, "/nope", "localhost").status, 404);
        let p: serde_json::Value = serde_json::from_str(&get(&st, &tcp, "/v1/peers", "[::1]").body).unwrap();
        assert_eq!(p[0]["addr"], "10.0.0.2");
        assert_eq!(p[0]["vtep"], "10.0.0.2");
        assert_eq!(p[0]["state"], "silent");
        assert!(p[0].get("last_seen_s").is_none());
        st.observe
            .activity
            .saw(IpAddr::from([10, 0, 0, 2]), Instant::now());
        let p: serde_json::Value = serde_json::from_str(&get(&st, &tcp, "/v1/peers", "[::1]").body).unwrap();
        assert_eq!(p[0]["state"], "reachable");
        assert!(p[0]["last_seen_s"].is_number());
    }

    #[test]
    fn metrics_and_trace_are_read_only_routes() {
        let st = state(None, false);
        let tx = st.table.by_name("default").unwrap().tx.of(0).clone();
        dataplane::stats::Counters::add(&tx.arp_suppressed, 3);
        let r = get(&st, &Via::Tcp, "/metrics", "localhost");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, crate::metrics::CONTENT_TYPE);
        assert!(String::from_utf8_lossy(&r.to_bytes()).contains("Content-Type: text/plain; version=0.0.4"));
        assert!(
            r.body.contains("# TYPE overlayd_frames_total counter"),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains(r#"overlayd_fdb_entries{network="default",vni="42",origin="learned"} 1"#),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains(r#"overlayd_arp_total{network="default",vni="42",result="suppressed"} 3"#),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains(r#"overlayd_peers{kind="static",state="silent"} 1"#),
            "{}",
            r.body
        );
        let t: serde_json::Value =
            serde_json::from_str(&get(&st, &Via::Tcp, "/v1/trace?dst=02:00:00:00:00:02", "localhost").body)
                .unwrap();
        assert_eq!(t["verdict"], "unicast", "{t}");
        assert_eq!(t["origin"], "learned", "{t}");
        let t: serde_json::Value =
            serde_json::from_str(&get(&st, &Via::Tcp, "/v1/trace?dst=ff:ff:ff:ff:ff:ff", "localhost").body)
                .unwrap();
        assert_eq!(t["verdict"], "flood", "{t}");
        assert_eq!(t["flood_to"][0], "10.0.0.2", "{t}");
        assert_eq!(get(&st, &Via::Tcp, "/v1/trace", "localhost").status, 400);
        assert_eq!(get(&st, &Via::Tcp, "/v1/trace?dst=zz", "localhost").status, 400);
        assert_eq!(
            get(
                &st,
                &Via::Tcp,
                "/v1/trace?dst=02:00:00:00:00:02&network=x",
                "localhost"
            )
            .status,
            400
        );
    }

    #[test]
    fn token_only_on_the_socket_and_only_for_allowed_peers() {
        let (dir, adm) = admitter("sock");
        let secret = adm.token().to_string();
        let st = state(Some(adm), true);
        let r = get(&st, &Via::Tcp, "/v1/token", "127.0.0.1:7947");
        assert_eq!(r.status, 403);
        assert!(!r.body.contains(&secret));
        assert!(r.body.contains("/run/test/admin.sock"), "{}", r.body);
        let refused = Via::Socket {
            refused: Some("uid 65534 may not".into()),
        };
        for path in ["/v1/token", "/v1/fdb"] {
            let r = get(&st, &refused, path, "localhost");
            assert_eq!(r.status, 403, "{path}");
            assert!(r.body.contains("uid 65534"), "{}", r.body);
        }
        let ok = Via::Socket { refused: None };
        let r = get(&st, &ok, "/v1/token", "whatever");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["token"], secret.as_str());
        // Every privileged route is refused on TCP, whatever its handler.
        for route in ROUTES.iter().filter(|r| r.access == Access::Privileged) {
            let head = format!(
                "{} {} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                route.method.as_str(),
                route.path
            );
            let r = rt().block_on(st.respond(&Via::Tcp, &raw(&head)));
            assert_eq!(r.status, 403, "{}", route.path);
        }
        assert_eq!(adm_token(&st), secret, "a refused rotation changed nothing");
        let _ = std::fs::remove_dir_all(dir.path());
    }

    fn admitter(tag: &str) -> (control::auth::StateDir, Arc<control::transport::Admission>) {
        let dir = control::auth::StateDir::new(
            std::env::temp_dir().join(format!("overlayd-admin-{tag}-{}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(dir.path());
        dir.init_cluster(IpAddr::from([10, 0, 0, 1])).unwrap();
        let adm = control::transport::Admission::from_state(&dir).unwrap().unwrap();
        (dir, Arc::new(adm))
    }

    fn adm_token(st: &AdminState) -> String {
        st.admission.as_ref().unwrap().token().to_string()
    }

    fn call(st: &AdminState, method: &str, path: &str) -> Response {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        rt().block_on(st.respond(&Via::Socket { refused: None }, &raw(&head)))
    }

    #[test]
    fn rotation_only_on_admitters() {
        let (dir, adm) = admitter("rot");
        let mut st = state(Some(adm), true);
        st.cluster_state = Some(dir.clone());
        let token = |r: Response| -> String {
            assert_eq!(r.status, 200, "{}", r.body);
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["token"].as_str().unwrap().to_string()
        };
        let old = token(call(&st, "GET", "/v1/token"));
        let new = token(call(&st, "POST", "/v1/token/rotate"));
        assert_ne!(old, new);
        assert_eq!(token(call(&st, "GET", "/v1/token")), new);
        assert_eq!(dir.join_token().unwrap().to_string(), new, "persisted");
        assert_eq!(
            call(&st, "GET", "/v1/token/rotate").status,
            405,
            "rotation needs POST"
        );
        let stats: serde_json::Value = serde_json::from_str(&call(&st, "GET", "/v1/stats").body).unwrap();
        assert_eq!(stats["quic"]["retries"], 0);
        // A member that is not an admitter names the admitters it knows.
        let member = control::auth::StateDir::new(dir.path().join("member"));
        member
            .save_admitters(&["10.0.0.1:7948".parse().unwrap()])
            .unwrap();
        let mut st = state(None, true);
        st.cluster_state = Some(member);
        for (m, p) in [("GET", "/v1/token"), ("POST", "/v1/token/rotate")] {
            let r = call(&st, m, p);
            assert_eq!(r.status, 409);
            assert!(
                r.body.contains("not an admitter") && r.body.contains("10.0.0.1:7948"),
                "{}",
                r.body
            );
        }
        let _ = std::fs::remove_dir_all(dir.path());
    }

    #[test]
    fn token_absent_says_why() {
        let r = get(
            &state(None, false),
            &Via::Socket { refused: None },
            "/v1/token",
            "x",
        );
        assert_eq!(r.status, 404);
        assert!(r.body.contains("static mode"), "{}", r.body);
        let r = get(
            &state(None, true),
            &Via::Socket { refused: None },
            "/v1/token",
            "x",
        );
        assert!(r.body.contains("--init-cluster"), "{}", r.body);
    }

    #[test]
    fn host_header_is_checked_on_tcp() {
        let st = state(None, false);
        let r = get(&st, &Via::Tcp, "/v1/stats", "evil.example:7947");
        assert_eq!(r.status, 403);
        assert!(r.body.contains("DNS rebinding"), "{}", r.body);
        let no_host = rt().block_on(st.respond(&Via::Tcp, &raw("GET /v1/stats HTTP/1.1\r\n\r\n")));
        assert_eq!(no_host.status, 400);
        let http10 = rt().block_on(st.respond(&Via::Tcp, &raw("GET /v1/stats HTTP/1.0\r\n\r\n")));
        assert_eq!(http10.status, 200);
        // The socket does not care about Host.
        let r = get(&st, &Via::Socket { refused: None }, "/v1/stats", "evil.example");
        assert_eq!(r.status, 200);
    }

    /// The accept loop end to end on a Unix socket in a temp dir: the connection cap answers 503 at once,
    /// slow clients get 408 after the request timeout, oversize heads 431, and the socket serves again after.
    #[test]
    fn accept_loop_caps_connections_and_times_out_slow_clients() {
        rt().block_on(async {
            let dir = std::env::temp_dir().join(format!("ovl-admin-loop-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let path = dir.join("a.sock");
            let mut sock = AdminSocket::bind(&path).await.unwrap();
            let limits = Limits {
                max_connections: 2,
                max_head: 512,
                max_body: 64,
                request_timeout: Duration::from_millis(300),
                write_timeout: Duration::from_millis(300),
            };
            let server = tokio::spawn(serve_unix(
                sock.take_listener().unwrap(),
                Arc::new(state(None, false)),
                limits,
                PeerPolicy::current(),
            ));
            async fn answer(s: &mut tokio::net::UnixStream) -> String {
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
                String::from_utf8_lossy(&out).into_owned()
            }
            let mut slow1 = tokio::net::UnixStream::connect(&path).await.unwrap();
            let mut slow2 = tokio::net::UnixStream::connect(&path).await.unwrap();
            slow1.write_all(b"GET /v1/fdb HTTP/1.1\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = Instant::now();
            let mut third = tokio::net::UnixStream::connect(&path).await.unwrap();
            let busy = answer(&mut third).await;
            assert!(busy.starts_with("HTTP/1.1 503"), "{busy:?}");
            assert!(started.elapsed() < Duration::from_millis(250), "503 is immediate");
            let a1 = answer(&mut slow1).await;
            let a2 = answer(&mut slow2).await;
            assert!(a1.starts_with("HTTP/1.1 408"), "{a1:?}");
            assert!(a2.starts_with("HTTP/1.1 408"), "{a2:?}");
            // Once those clients hang up, their slots free up (the server drains them until EOF).
            drop((slow1, slow2, third));
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Oversize head.
            let mut big = tokio::net::UnixStream::connect(&path).await.unwrap();
            let _ = big.write_all(&[b'a'; 2048]).await;
            let a = answer(&mut big).await;
            assert!(a.starts_with("HTTP/1.1 431"), "{a:?}");
            // Slots are free again: a normal request is served.
            let mut ok = tokio::net::UnixStream::connect(&path).await.unwrap();
            ok.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let a = answer(&mut ok).await;
            assert!(a.starts_with("HTTP/1.1 200"), "{a:?}");
            server.abort();
            drop(sock);
            std::fs::remove_dir_all(&dir).unwrap();
        });
    }
}
