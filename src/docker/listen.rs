//! The Docker plugin listener (`--docker-plugin ADDR`): `unix:PATH` (production, root-only socket where
//! dockerd discovers plugins: `/run/docker/plugins/overlayd.sock`) or `tcp:127.0.0.1:PORT` (tests: a `.spec`
//! file under `/etc/docker/plugins/` names the port, and dockerds in different network namespaces each reach
//! their own overlayd on their own loopback; unsafe on multi-user hosts: any local user can call it).
//!
//! HTTP framing reuses the admin API's bounded parser (`admin::http`); each call is handled on a blocking
//! thread because backend calls may wait (block grants, netlink).

use super::{DockerBackend, Driver};
use crate::admin::http::{self, Limits, Method, Response};
use crate::admin::{AdminSocket, PeerPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tracing::warn;

/// Default `--docker-plugin` address.
pub const DEFAULT_DOCKER_PLUGIN: &str = "unix:/run/docker/plugins/overlayd.sock";
/// The content type of Docker plugin answers.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1+json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("--docker-plugin {0:?}: expected unix:/ABSOLUTE/PATH.sock or tcp:127.0.0.1:PORT")]
    Syntax(String),
    #[error("--docker-plugin {0:?}: the socket path must be absolute and at most 107 bytes")]
    Path(String),
    #[error("--docker-plugin {0:?}: the TCP form must be a loopback address with a port (tcp:127.0.0.1:PORT); anyone who reaches it can create networks and veths")]
    NotLoopback(String),
}

impl std::str::FromStr for DockerAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if !p.starts_with('/') || p.len() > crate::admin::socket::MAX_SOCKET_PATH || p.contains('\0') {
                return Err(AddrError::Path(s.to_string()));
            }
            return Ok(DockerAddr::Unix(PathBuf::from(p)));
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            let a = a.strip_prefix("//").unwrap_or(a);
            let addr: SocketAddr = a.parse().map_err(|_| AddrError::Syntax(s.to_string()))?;
            if !addr.ip().is_loopback() || addr.port() == 0 {
                return Err(AddrError::NotLoopback(s.to_string()));
            }
            return Ok(DockerAddr::Tcp(addr));
        }
        Err(AddrError::Syntax(s.to_string()))
    }
}

impl std::fmt::Display for DockerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            DockerAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl DockerAddr {
    /// The line of a `/etc/docker/plugins/NAME.spec` file pointing dockerd at this address.
    pub fn spec_url(&self) -> String {
        match self {
            DockerAddr::Unix(p) => format!("unix://{}", p.display()),
            DockerAddr::Tcp(a) => format!("tcp://{a}"),
        }
    }
}

/// A bound plugin listener. The Unix form removes its socket when dropped.
#[derive(Debug)]
pub enum Listener {
    Unix(AdminSocket),
    Tcp(TcpListener),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("Docker plugin socket: {0}")]
    Unix(#[from] crate::admin::socket::SocketError),
    #[error("cannot listen on --docker-plugin tcp:{addr}: {source} (port in use? choose another)")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind `addr` (the socket file is created 0600 with the admin socket's safe-replacement rules).
pub async fn bind(addr: &DockerAddr) -> Result<Listener, ListenError> {
    match addr {
        DockerAddr::Unix(p) => Ok(Listener::Unix(AdminSocket::bind(p).await?)),
        DockerAddr::Tcp(a) => TcpListener::bind(a)
            .await
            .map(Listener::Tcp)
            .map_err(|source| ListenError::Tcp { addr: *a, source }),
    }
}

/// Bind `addr` and serve `driver` there until the task is dropped: what `--docker-plugin ADDR` runs, e.g.
/// `tokio::spawn(docker::listen::run(addr, Arc::new(Driver::new(backend, Some(state_dir))?)))` after a
/// successful [`bind`] check, or bind first and pass the listener to [`serve`] to report errors at start.
pub async fn run<B: DockerBackend>(addr: DockerAddr, driver: Arc<Driver<B>>) -> Result<(), ListenError> {
    let l = bind(&addr).await?;
    serve(l, driver).await;
    Ok(())
}

/// Serve plugin calls until the task is dropped.
pub async fn serve<B: DockerBackend>(listener: Listener, driver: Arc<Driver<B>>) {
    let limits = Limits::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    match listener {
        Listener::Unix(mut sock) => {
            let Some(l): Option<UnixListener> = sock.take_listener() else {
                return;
            };
            let policy = PeerPolicy::current();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    // EMFILE and the like: back off instead of spinning (as the admin listeners do).
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                if let Err(why) = policy.check(&s) {
                    warn!(%why, "Docker plugin socket: refused a caller");
                    continue;
                }
                let d = driver.clone();
                tokio::spawn(async move {
                    let mut s = s;
                    serve_one(&mut s, &d, false, &limits).await;
                    drop(permit);
                });
            }
            // `sock` (and so the socket file) lives as long as this loop.
        }
        Listener::Tcp(l) => loop {
            let Ok((s, _)) = l.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let d = driver.clone();
            tokio::spawn(async move {
                let mut s = s;
                serve_one(&mut s, &d, true, &limits).await;
                drop(permit);
            });
        },
    }
}

async fn serve_one<B: DockerBackend, S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    driver: &Arc<Driver<B>>,
    tcp: bool,
    limits: &Limits,
) {
    let resp = match http::read_request(s, limits).await {
        Err(e) => Response::error(e.status(), &e.to_string()),
        Ok(raw) => match route(&raw.head, tcp) {
            Err(r) => r,
            Ok(path) => {
                let d = driver.clone();
                let body = raw.body;
                match tokio::task::spawn_blocking(move || d.handle(&path, &body)).await {
                    Ok(r) => plugin_response(r),
                    Err(_) => plugin_response(super::Reply::err(500, "overlayd: the driver call failed")),
                }
            }
        },
    };
    http::write_response(s, &resp, limits).await;
}

/// Check the request head: POST, and on TCP a loopback `Host` (a browser lured by DNS rebinding sends its
/// own host name). Returns the path.
pub fn route(head: &[u8], tcp: bool) -> Result<String, Response> {
    let req = http::parse_request(head).map_err(|e| plugin_response(super::Reply::err(e.status(), e)))?;
    if req.method != Method::Post {
        return Err(plugin_response(super::Reply::err(
            405,
            "Docker plugin calls are POST",
        )));
    }
    if tcp && req.host.is_some_and(|h| !http::is_loopback_host(h)) {
        return Err(plugin_response(super::Reply::err(
            403,
            "Host is not a loopback name",
        )));
    }
    Ok(req.path.to_string())
}

fn plugin_response(r: super::Reply) -> Response {
    Response {
        status: r.status,
        body: r.body,
        content_type: PLUGIN_JSON,
    }
}
