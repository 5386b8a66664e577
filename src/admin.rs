//! The admin endpoint: a tiny read-only HTTP/1.1 server on loopback that `overlayctl` queries. Hand-rolled on
//! tokio rather than pulling in hyper/axum: it serves a handful of GET routes with `Connection: close`, and the
//! request parser below is ~30 lines with its own tests.
//!
//! Routes: `GET /v1/fdb`, `GET /v1/stats`, `GET /v1/peers`, `GET /v1/token`, `POST /v1/token/rotate`,
//! `GET /v1/health`. The token grants membership; `token` and `token/rotate` are privileged (they belong on
//! the root-only admin socket) and answer only on an admitter — elsewhere they name the admitters.

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
    /// On admitters: the join token and its rotation.
    pub admission: Option<Arc<control::transport::Admission>>,
    /// Cluster mode: the state dir (to name admitters when this node is not one).
    pub cluster_state: Option<control::auth::StateDir>,
    /// Cluster mode: counters of the QUIC port, shown as `quic` in stats.
    pub quic: Option<Arc<control::exposure::QuicStats>>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl AdminState {
    /// `token` and `token --rotate` on a node that is not an admitter (or not a cluster member).
    fn not_admitter(&self) -> Response {
        let body = match &self.cluster_state {
            Some(state) => {
                let admitters: Vec<String> = state.load_admitters().iter().map(ToString::to_string).collect();
                let named = if admitters.is_empty() {
                    "the node started with --init-cluster".to_string()
                } else {
                    format!("gossip address {}", admitters.join(", "))
                };
                format!("this node is not an admitter (it holds no CA key or join secret); run the command on an admitter: {named}")
            }
            None => "no join token: this overlayd is not a cluster member (start the first node with --init-cluster)".to_string(),
        };
        Response {
            status: if self.cluster_state.is_some() { 409 } else { 404 },
            body: serde_json::json!({ "error": body }).to_string(),
        }
    }

    pub fn handle(&self, method: &str, path: &str) -> Response {
        let now = Instant::now();
        let json = |r: Result<String, serde_json::Error>| match r {
            Ok(body) => Response { status: 200, body },
            Err(e) => Response {
                status: 500,
                body: format!("{{\"error\":\"{e}\"}}"),
            },
        };
        match (method, path) {
            ("GET", "/v1/fdb") => {
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
            ("GET", "/v1/stats") => {
                let mut v = match serde_json::to_value(Snapshot::sum(self.counters.iter().map(|c| &**c))) {
                    Ok(v) => v,
                    Err(e) => return json(Err(e)),
                };
                if let (Some(q), Some(obj)) = (&self.quic, v.as_object_mut()) {
                    obj.insert("quic".into(), serde_json::json!(q.snapshot()));
                }
                json(serde_json::to_string(&v))
            }
            ("GET", "/v1/peers") => {
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
            // Privileged: grants membership (root-only admin socket).
            ("GET", "/v1/token") => match &self.admission {
                Some(a) => json(serde_json::to_string(
                    &serde_json::json!({ "token": a.token().to_string() }),
                )),
                None => self.not_admitter(),
            },
            // Privileged: changes state (root-only admin socket). The old token is refused from now on.
            ("POST", "/v1/token/rotate") => match &self.admission {
                Some(a) => match a.rotate() {
                    Ok(t) => {
                        tracing::info!("join secret rotated; the previous token is no longer accepted");
                        json(serde_json::to_string(
                            &serde_json::json!({ "token": t.to_string() }),
                        ))
                    }
                    Err(e) => Response {
                        status: 500,
                        body: serde_json::json!({ "error": e.to_string() }).to_string(),
                    },
                },
                None => self.not_admitter(),
            },
            ("GET", "/v1/health") => Response {
                status: 200,
                body: "{\"ok\":true}".into(),
            },
            ("GET", _) | ("POST", _) => Response {
                status: 404,
                body: "{\"error\":\"no such route; try /v1/fdb, /v1/stats, /v1/peers\"}".into(),
            },
            _ => Response {
                status: 405,
                body: "{\"error\":\"only GET and POST are served\"}".into(),
            },
        }
    }
}

/// Parse the request line of an HTTP/1.x request head into (method, path); GET and POST are served.
pub fn parse_request(head: &[u8]) -> Result<(&str, &str), u16> {
    let line_end = head.windows(2).position(|w| w == b"\r\n").ok_or(400u16)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| 400u16)?;
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    match (method, path, version, parts.next()) {
        (Some(m @ ("GET" | "POST")), Some(p), Some(v), None)
            if v.starts_with("HTTP/1.") && p.starts_with('/') =>
        {
            Ok((m, p.split('?').next().unwrap_or(p)))
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
    let resp = match parse_request(&head) {
        Ok((method, path)) => state.handle(method, path),
        Err(status) => Response {
            status,
            body: "{\"error\":\"bad request: only GET and POST are served\"}".into(),
        },
    };
    let reason = match resp.status {
        200 => "OK",
        404 => "Not Found",
        409 => "Conflict",
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
            Ok(("GET", "/v1/fdb"))
        );
        assert_eq!(
            parse_request(b"GET /v1/stats?x=1 HTTP/1.0\r\n\r\n"),
            Ok(("GET", "/v1/stats"))
        );
        assert_eq!(
            parse_request(b"POST /v1/token/rotate HTTP/1.1\r\n\r\n"),
            Ok(("POST", "/v1/token/rotate"))
        );
        assert_eq!(parse_request(b"PUT /v1/fdb HTTP/1.1\r\n\r\n"), Err(405));
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
            admission: None,
            cluster_state: None,
            quic: None,
        };
        let r = st.handle("GET", "/v1/fdb");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["vni"], 42);
        assert_eq!(v[0]["mac"], "02:00:00:00:00:02");
        assert_eq!(v[0]["vtep"], "10.0.0.2");
        assert_eq!(v[0]["origin"], "learned");
        assert!(v[0]["age_s"].is_u64());
        let s: serde_json::Value = serde_json::from_str(&st.handle("GET", "/v1/stats").body).unwrap();
        for k in ["rx_frames", "tx_frames", "rx_datagrams", "tx_datagrams"] {
            assert_eq!(s[k], 0, "{k}");
        }
        assert!(s["drops"].is_object());
        assert_eq!(st.handle("GET", "/nope").status, 404);
        assert_eq!(st.handle("GET", "/v1/token").status, 404);
        assert_eq!(st.handle("POST", "/v1/token/rotate").status, 404);
        assert_eq!(st.handle("POST", "/v1/fdb").status, 404);
        let p: serde_json::Value = serde_json::from_str(&st.handle("GET", "/v1/peers").body).unwrap();
        assert_eq!(p[0]["addr"], "10.0.0.2");
        assert_eq!(p[0]["state"], "static");
    }

    #[test]
    fn token_and_rotation_only_on_admitters() {
        let base = std::env::temp_dir().join(format!("overlayd-admin-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = control::auth::StateDir::new(base.join("a"));
        dir.init_cluster(IpAddr::from([10, 0, 0, 1])).unwrap();
        let adm = control::transport::Admission::from_state(&dir)
            .unwrap()
            .map(Arc::new);
        let now = Instant::now();
        let mk = |admission, cluster_state| AdminState {
            vni: 1,
            fdb: Arc::new(Fdb::new(8, Fdb::DEFAULT_AGEING, now)),
            counters: vec![Arc::default()],
            peers: Arc::new(PeerSet::default()),
            members: Arc::default(),
            admission,
            cluster_state,
            quic: Some(Arc::default()),
        };
        let st = mk(adm, Some(dir.clone()));
        let token = |r: Response| -> String {
            assert_eq!(r.status, 200, "{}", r.body);
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["token"].as_str().unwrap().to_string()
        };
        let old = token(st.handle("GET", "/v1/token"));
        let new = token(st.handle("POST", "/v1/token/rotate"));
        assert_ne!(old, new);
        assert_eq!(token(st.handle("GET", "/v1/token")), new);
        assert_eq!(dir.join_token().unwrap().to_string(), new, "persisted");
        assert_eq!(
            st.handle("GET", "/v1/token/rotate").status,
            404,
            "rotation needs POST"
        );
        let stats: serde_json::Value = serde_json::from_str(&st.handle("GET", "/v1/stats").body).unwrap();
        assert_eq!(stats["quic"]["retries"], 0);
        // A member that is not an admitter names the admitters it knows.
        let member = control::auth::StateDir::new(base.join("b"));
        member
            .save_admitters(&["10.0.0.1:7948".parse().unwrap()])
            .unwrap();
        let st = mk(None, Some(member));
        for (m, p) in [("GET", "/v1/token"), ("POST", "/v1/token/rotate")] {
            let r = st.handle(m, p);
            assert_eq!(r.status, 409);
            assert!(
                r.body.contains("not an admitter") && r.body.contains("10.0.0.1:7948"),
                "{}",
                r.body
            );
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
