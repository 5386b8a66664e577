//! The admin endpoint: a tiny read-only HTTP/1.1 server on loopback that `overlayctl` queries. Hand-rolled on
//! tokio rather than pulling in hyper/axum: it serves a handful of GET routes with `Connection: close`, and the
//! request parser below is ~30 lines with its own tests.
//!
//! Routes: `GET /v1/fdb`, `GET /v1/stats`, `GET /v1/peers`, `GET /v1/token`, `GET /v1/health`,
//! `POST /v1/revoke/<node id>`. The token grants membership: like `docker swarm join-token`, only someone
//! with access to the host's loopback can read it. Revoke changes state, so it is POST only (a GET could
//! be triggered cross-site by any web page the host's browser opens).

use dataplane::engine::PeerSet;
use dataplane::fdb::{Fdb, Origin};
use dataplane::stats::{Counters, Snapshot};
use dataplane::wire::MacAddr;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One FDB row as `overlayctl fdb --json` prints it.
#[derive(Serialize, Debug)]
pub struct FdbEntryJson {
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
    pub state: &'static str,
    pub generation: u64,
}

/// What the endpoint can read. Everything is shared with the data plane; nothing here blocks it.
#[derive(Debug)]
pub struct AdminState {
    pub vni: u32,
    pub fdb: Arc<Fdb>,
    pub counters: Vec<Arc<Counters>>,
    pub peers: Arc<PeerSet>,
    /// Cluster membership (`None` in static mode).
    pub members: crate::cluster::Members,
    /// Join token, on cluster members that can admit joiners.
    /// PRIVILEGED: moves to the root-only admin socket (trust-admin).
    pub token: Option<String>,
    /// `overlayctl revoke`: requests to the control plane (`None` in static mode).
    /// PRIVILEGED: moves to the root-only admin socket (trust-admin).
    pub revoke: Option<RevokeTx>,
    /// Control-plane counters (cluster mode), shown under `control` in `/v1/stats`.
    pub control_stats: crate::cluster::ControlCounters,
}

/// A revoke request to the control plane: the node id and where to send the outcome (text) or error.
pub type RevokeTx = tokio::sync::mpsc::Sender<(
    control::NodeId,
    tokio::sync::oneshot::Sender<Result<String, String>>,
)>;

/// JSON error body.
fn error(status: u16, msg: &str) -> Response {
    Response {
        status,
        body: serde_json::json!({ "error": msg }).to_string(),
    }
}

/// The path of a `POST <path> HTTP/1.x` request line, if that is what `head` starts with.
pub fn parse_post(head: &[u8]) -> Option<&str> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("POST"), Some(p), Some(v), None) if v.starts_with("HTTP/1.") && p.starts_with('/') => Some(p),
        _ => None,
    }
}

impl AdminState {
    /// PRIVILEGED (state-changing): `POST /v1/revoke/<id>`, id as in `peers --json`.
    pub async fn revoke(&self, id: &str) -> Response {
        let Ok(node) = id.parse::<control::NodeId>() else {
            return error(
                400,
                "NODE_ID must be the hex id shown by `overlayctl peers --json`",
            );
        };
        let Some(tx) = &self.revoke else {
            return error(409, "static peers cannot be revoked (this overlayd runs without a cluster); remove the --peer on every host instead");
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        if tx.send((node, done)).await.is_err() {
            return error(503, "the control plane has stopped; restart overlayd");
        }
        match tokio::time::timeout(Duration::from_secs(3), rx).await {
            Ok(Ok(Ok(outcome))) => Response {
                status: 200,
                body: serde_json::json!({ "node": node.to_string(), "outcome": outcome }).to_string(),
            },
            Ok(Ok(Err(e))) => error(409, &e),
            _ => error(503, "the control plane did not answer; retry"),
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl AdminState {
    pub fn handle(&self, path: &str) -> Response {
        let now = Instant::now();
        let json = |r: Result<String, serde_json::Error>| match r {
            Ok(body) => Response { status: 200, body },
            Err(e) => Response {
                status: 500,
                body: format!("{{\"error\":\"{e}\"}}"),
            },
        };
        match path {
            "/v1/fdb" => {
                let rows: Vec<FdbEntryJson> = self
                    .fdb
                    .rows(now)
                    .into_iter()
                    .map(|r| FdbEntryJson {
                        vni: self.vni,
                        mac: r.mac,
                        vtep: r.vtep,
                        origin: r.origin,
                        age_s: r.age_s,
                    })
                    .collect();
                json(serde_json::to_string(&rows))
            }
            "/v1/stats" => {
                let snap = Snapshot::sum(self.counters.iter().map(|c| &**c));
                let mut v = serde_json::to_value(&snap).unwrap_or_default();
                let control = self.control_stats.read().ok().and_then(|c| *c);
                if let (Some(obj), Some(c)) = (v.as_object_mut(), control) {
                    obj.insert("control".into(), serde_json::to_value(c).unwrap_or_default());
                }
                json(serde_json::to_string(&v))
            }
            "/v1/peers" => {
                if let Ok(m) = self.members.read() {
                    if let Some(rows) = m.as_ref() {
                        return json(serde_json::to_string(rows));
                    }
                }
                let peers: Vec<PeerJson> = self
                    .peers
                    .snapshot()
                    .iter()
                    .map(|a| PeerJson {
                        id: a.to_string(),
                        addr: *a,
                        state: "static",
                        generation: 0,
                    })
                    .collect();
                json(serde_json::to_string(&peers))
            }
            "/v1/token" => match &self.token {
                Some(t) => json(serde_json::to_string(&serde_json::json!({ "token": t }))),
                None => Response {
                    status: 404,
                    body: "{\"error\":\"no join token: this overlayd is not a cluster member (start the first node with --init-cluster)\"}".into(),
                },
            },
            "/v1/health" => Response {
                status: 200,
                body: "{\"ok\":true}".into(),
            },
            _ => Response {
                status: 404,
                body: "{\"error\":\"no such route; try /v1/fdb, /v1/stats, /v1/peers\"}".into(),
            },
        }
    }
}

/// Parse the request line of an HTTP/1.x request head; only GET is served.
pub fn parse_request(head: &[u8]) -> Result<&str, u16> {
    let line_end = head.windows(2).position(|w| w == b"\r\n").ok_or(400u16)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| 400u16)?;
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    match (method, path, version, parts.next()) {
        (Some("GET"), Some(p), Some(v), None) if v.starts_with("HTTP/1.") && p.starts_with('/') => {
            Ok(p.split('?').next().unwrap_or(p))
        }
        (Some(_), Some(_), Some(v), None) if v.starts_with("HTTP/1.") => Err(405),
        _ => Err(400),
    }
}

const MAX_HEAD: usize = 8192;

async fn serve_one(mut s: TcpStream, state: Arc<AdminState>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let resp = match (parse_post(&head), parse_request(&head)) {
        (Some(path), _) if path.starts_with("/v1/revoke/") => {
            state.revoke(path.trim_start_matches("/v1/revoke/")).await
        }
        (_, Ok(path)) => state.handle(path),
        (_, Err(status)) if status == 405 => Response {
            status,
            body: "{\"error\":\"only GET is served, and POST on /v1/revoke/<id>\"}".into(),
        },
        (_, Err(status)) => Response {
            status,
            body: "{\"error\":\"bad request: only GET is served\"}".into(),
        },
    };
    let reason = match resp.status {
        200 => "OK",
        404 => "Not Found",
        409 => "Conflict",
        503 => "Service Unavailable",
        405 => "Method Not Allowed",
        400 => "Bad Request",
        _ => "Internal Server Error",
    };
    let msg = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        resp.body.len(),
        resp.body
    );
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await
}

/// Accept connections until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let st = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), serve_one(s, st)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line() {
        assert_eq!(
            parse_request(b"GET /v1/fdb HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok("/v1/fdb")
        );
        assert_eq!(
            parse_request(b"GET /v1/stats?x=1 HTTP/1.0\r\n\r\n"),
            Ok("/v1/stats")
        );
        assert_eq!(parse_request(b"POST /v1/fdb HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse_request(b"GET /v1/fdb\r\n\r\n"), Err(400));
        assert_eq!(parse_request(b"\xff\xfe\r\n"), Err(400));
        assert_eq!(parse_request(b"GET"), Err(400));
    }

    proptest::proptest! {
        #[test]
        fn request_parser_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_request(&data);
        }
    }

    #[test]
    fn routes() {
        let now = Instant::now();
        let fdb = Arc::new(Fdb::new(8, Fdb::DEFAULT_AGEING, now));
        fdb.learn(
            MacAddr([2, 0, 0, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 2]),
            Origin::Learned,
            now,
        );
        let st = AdminState {
            vni: 42,
            fdb,
            counters: vec![Arc::default()],
            peers: Arc::new(PeerSet::new([IpAddr::from([10, 0, 0, 2])])),
            members: Arc::default(),
            token: None,
            revoke: None,
            control_stats: Arc::new(std::sync::RwLock::new(Some(control::ControlStats {
                seq_refused: 3,
                ..Default::default()
            }))),
        };
        let r = st.handle("/v1/fdb");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["vni"], 42);
        assert_eq!(v[0]["mac"], "02:00:00:00:00:02");
        assert_eq!(v[0]["vtep"], "10.0.0.2");
        assert_eq!(v[0]["origin"], "learned");
        assert!(v[0]["age_s"].is_u64());
        let s: serde_json::Value = serde_json::from_str(&st.handle("/v1/stats").body).unwrap();
        for k in ["rx_frames", "tx_frames", "rx_datagrams", "tx_datagrams"] {
            assert_eq!(s[k], 0, "{k}");
        }
        assert!(s["drops"].is_object());
        assert_eq!(s["control"]["seq_refused"], 3);
        assert_eq!(st.handle("/nope").status, 404);
        assert_eq!(st.handle("/v1/token").status, 404);
        let p: serde_json::Value = serde_json::from_str(&st.handle("/v1/peers").body).unwrap();
        assert_eq!(p[0]["addr"], "10.0.0.2");
        assert_eq!(p[0]["state"], "static");
        // Static peers cannot be revoked; a bad id is a 400.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(st.revoke("10.0.0.2"));
        assert_eq!(r.status, 400, "{}", r.body);
        let r = rt.block_on(st.revoke("00000000000000aa"));
        assert_eq!(r.status, 409);
        assert!(r.body.contains("static peers cannot be revoked"), "{}", r.body);
    }

    #[test]
    fn post_line() {
        assert_eq!(
            parse_post(b"POST /v1/revoke/ab HTTP/1.1\r\n\r\n"),
            Some("/v1/revoke/ab")
        );
        assert_eq!(parse_post(b"GET /v1/revoke/ab HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_post(b"POST /x\r\n"), None);
        assert_eq!(parse_post(b"\xff\r\n"), None);
    }
}
