//! Tests of the admin API through [`AdminState::respond`] and the accept loop.

use super::http::RawRequest;
use super::*;
use std::time::{Duration, Instant};
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
    let table = Arc::new(
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
    );
    AdminState {
        fdb_watch: watch::FdbWatch::new(table.clone()),
        table,
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
    let s: serde_json::Value = serde_json::from_str(&get(&st, &tcp, "/v1/stats", "localhost").body).unwrap();
    for k in ["rx_frames", "tx_frames", "rx_datagrams", "tx_datagrams"] {
        assert_eq!(s[k], 0, "{k}");
    }
    assert!(s["drops"].is_object());
    // `--workers`: each worker's traffic, from its own counters; the totals are their sums.
    let net = st.table.by_name("default").unwrap();
    dataplane::stats::Counters::add(&net.rx.of(1).rx_datagrams, 5);
    dataplane::stats::Counters::add(&net.rx.of(0).rx_datagrams, 2);
    dataplane::stats::Counters::add(&net.tx.of(1).rx_frames, 7);
    let s: serde_json::Value = serde_json::from_str(&get(&st, &tcp, "/v1/stats", "localhost").body).unwrap();
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

mod fdb_watch;
