//! QUIC transport on 127.0.0.1: join with a token (CA pinned by fingerprint, secret checked), mutual-TLS
//! gossip between two members carrying membership and FDB, and refusal of a peer whose certificate
//! comes from another CA (it changes no state). Real sockets, so waits are bounded generously.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use control::auth::{JoinToken, NodeCredential, StateDir};
use control::exposure::Limits;
use control::transport::{self, Admission, GossipOptions, TransportError};
use control::Output;
use control::{ControlConfig, MacAddr, MemberState, RevokeOutcome};

fn tempdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("overlayd-transport-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// The VTEP a test node claims and its gossip address's IP (both go into its attestation).
fn vteps(n: u8) -> Vec<IpAddr> {
    vec![IpAddr::from([192, 168, 0, n]), IpAddr::from([127, 0, 0, 1])]
}

fn opts(dir: &StateDir, cred: NodeCredential, vtep: [u8; 4], generation: u64) -> GossipOptions {
    GossipOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:0".parse().unwrap(),
        vtep: IpAddr::from(vtep),
        generation,
        credential: cred,
        admission: Admission::from_state(dir).unwrap().map(Arc::new),
        quic: Arc::default(),
        limits: Limits::default(),
        config: ControlConfig::default(),
        seed: generation,
        state: Some(dir.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_gossip_and_refuse_foreign_ca() {
    // First member.
    let dir_a = StateDir::new(tempdir("a")).with_vteps(vteps(1));
    let cred_a = dir_a.init_cluster(IpAddr::from([192, 168, 0, 1])).unwrap();
    let opts_a = opts(&dir_a, cred_a.clone(), [192, 168, 0, 1], 1);
    let quic_a = Arc::clone(&opts_a.quic);
    let mut a = transport::start(opts_a).unwrap();
    let addr_a = a.local_addr();
    let token: JoinToken = dir_a.join_token().unwrap().to_string().parse().unwrap();

    // Wrong secret: refused, nothing stored.
    let dir_x = StateDir::new(tempdir("x")).with_vteps(vteps(9));
    let bad = JoinToken {
        secret: [7; 32],
        ..token.clone()
    };
    let e = transport::join_cluster(addr_a, &bad, &dir_x, IpAddr::from([192, 168, 0, 9]))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Refused { .. }), "{e}");
    assert!(!dir_x.is_initialised());
    // Wrong CA fingerprint: the joiner refuses the member before sending the secret.
    let bad = JoinToken {
        ca_fingerprint: [9; 32],
        ..token.clone()
    };
    let e = transport::join_cluster(addr_a, &bad, &dir_x, IpAddr::from([192, 168, 0, 9]))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Connect { .. }), "{e}");

    // Second member joins with the token, then restarts from the stored credential (no token).
    let dir_b = StateDir::new(tempdir("b")).with_vteps(vteps(2));
    let joined = transport::join_cluster(addr_a, &token, &dir_b, IpAddr::from([192, 168, 0, 2]))
        .await
        .unwrap();
    let cred_b = dir_b.load_credential().unwrap();
    assert_eq!(joined.node_id, cred_b.node_id);
    assert_eq!(
        control::auth::node_id_from_cert(&cred_b.chain[0]),
        Some(cred_b.node_id)
    );
    let opts_b = opts(&dir_b, cred_b.clone(), [192, 168, 0, 2], 1);
    let quic_b = Arc::clone(&opts_b.quic);
    let mut b = transport::start(opts_b).unwrap();
    let before = quic_a.snapshot();
    b.join(addr_a).await.unwrap();
    let mac: MacAddr = "02:00:00:00:0b:01".parse().unwrap();
    let ip = IpAddr::from([10, 20, 0, 11]);
    b.set_local(vec![(vni(), mac, vec![ip])]).await.unwrap();

    // A learns B as alive and installs B's MAC → B's VTEP.
    let installed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = a.events.recv().await {
            if ev
                == (Output::FdbInstall {
                    vni: vni(),
                    mac,
                    vtep: IpAddr::from([192, 168, 0, 2]),
                    ips: vec![ip],
                })
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(installed, "A never installed B's MAC");
    // B reached A over a gossip connection it dialled: a dial counted, none failed, its time recorded.
    let q = quic_b.snapshot();
    assert!(q.dials >= 1 && q.dial_failures == 0, "{q:?}");
    assert!(q.dial_ms_max <= q.dial_ms_total, "{q:?}");
    // That dial presented the token A sent on the join connection (same IP, another port): A let it
    // in without a Retry.
    let after = quic_a.snapshot();
    assert_eq!(
        after.retries, before.retries,
        "B's gossip dial got a Retry: {after:?}"
    );
    assert!(after.token_validated > before.token_validated, "{after:?}");
    assert_eq!(
        a.installed(vni()).await.unwrap(),
        vec![(mac, IpAddr::from([192, 168, 0, 2]), vec![ip])]
    );

    // Networks and blocks through the handle: B (no CA key) defines a network, A learns it; B asks
    // for a block, A (the admitter) grants it, B is told.
    let blue =
        control::NetworkDef::new("blue", 100, "10.20.0.0/16".parse().unwrap(), None, false, None).unwrap();
    b.create_network(blue.clone()).await.unwrap();
    let e = b
        .create_network(control::NetworkDef {
            mtu: Some(1400),
            ..blue.clone()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let upsert = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = a.events.recv().await {
            if ev == Output::NetworkUpsert(blue.clone()) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(upsert, "A never heard of the network");
    assert_eq!(
        b.request_block("blue").await.unwrap(),
        control::BlockOutcome::Requested(cred_a.node_id)
    );
    let block: control::IpNet = "10.20.0.0/26".parse().unwrap();
    let granted = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = b.events.recv().await {
            if ev
                == (Output::BlockGranted {
                    network: "blue".into(),
                    block,
                })
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(granted, "B never got a block");
    let nets = b.networks().await.unwrap();
    assert_eq!((nets[0].def.clone(), nets[0].blocks.clone()), (blue, vec![block]));
    let members = a.members().await.unwrap();
    let b_row = members
        .iter()
        .find(|m| m.id == cred_b.node_id.to_string())
        .expect("B listed on A");
    assert_eq!(b_row.state, MemberState::Alive);
    let json = serde_json::to_string(&members).unwrap();
    assert!(
        json.contains("\"state\":\"alive\"") && json.contains("\"generation\":1"),
        "{json}"
    );

    // A node with a credential from another cluster's CA is refused at the handshake.
    let dir_c = StateDir::new(tempdir("c")).with_vteps(vteps(3));
    let cred_c = dir_c.init_cluster(IpAddr::from([192, 168, 0, 3])).unwrap();
    let foreign = NodeCredential {
        ca: cred_a.ca.clone(),
        ..cred_c
    };
    let client = transport::gossip_client_config(&foreign).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    let result = async {
        let conn = ep
            .connect_with(client, addr_a, "overlayd")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        // Under TLS 1.3 the client may finish before the server rejects its certificate: try to use it.
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(&control::messages::encode_swim(&[0; 16]))
            .await
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        conn.closed().await;
        Err::<(), String>(conn.close_reason().map(|r| r.to_string()).unwrap_or_default())
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), result)
        .await
        .expect("refusal is prompt");
    assert!(refused.is_err());
    println!("foreign-CA peer refused: {:?}", refused);
    // And it changed no state: A still knows exactly itself and B.
    let members = a.members().await.unwrap();
    assert_eq!(members.len(), 2, "{members:?}");

    // B crashes and restarts on the same address with generation 2 (no token): A takes the new generation
    // and the new process can talk to A even though A's old connection to B's first process is dead.
    let addr_b = b.local_addr();
    b.abort();
    let b2_opts = || {
        let mut o = opts(&dir_b, dir_b.load_credential().unwrap(), [192, 168, 0, 2], 2);
        o.bind = addr_b;
        o.advertise = addr_b;
        o
    };
    let mut b2 = None;
    for _ in 0..50 {
        // The old socket is released asynchronously after abort.
        match transport::start(b2_opts()) {
            Ok(h) => {
                b2 = Some(h);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let b2 = b2.expect("rebind B's gossip port");
    // No join call: B2 re-joins through the members remembered in its state dir.
    // (Saved off the pump thread when B first learned A; poll rather than assume it has landed.)
    for _ in 0..100 {
        if dir_b.load_peers().unwrap() == vec![addr_a] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dir_b.load_peers().unwrap(), vec![addr_a]);
    b2.set_local(vec![(vni(), mac, vec![ip])]).await.unwrap();
    let gen2 = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ms = a.members().await.unwrap();
            if ms.iter().any(|m| {
                m.id == cred_b.node_id.to_string() && m.generation == 2 && m.state == MemberState::Alive
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And B2 sees A alive (its acks reach B2 over the adopted connection).
        loop {
            let ms = b2.members().await.unwrap();
            if ms
                .iter()
                .any(|m| m.id == cred_a.node_id.to_string() && m.state == MemberState::Alive)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gen2.is_ok(), "A did not take B's generation 2");

    b2.leave().await.unwrap();
    for d in [&dir_a, &dir_b, &dir_c, &dir_x] {
        let _ = std::fs::remove_dir_all(d.path());
    }
}

/// Files in a state dir that hold a private key (PEM "PRIVATE KEY").
fn private_keys(dir: &StateDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            text.contains("PRIVATE KEY")
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_through_member_rotation_and_no_admitter() {
    let vtep = |n: u8| IpAddr::from([192, 168, 1, n]);
    // Gossip runs on 127.0.0.1: each node's attestation names its VTEP and that address.
    let claimed = |n: u8| vec![vtep(n), IpAddr::from([127, 0, 0, 1])];
    // A: the admitter.
    let dir_a = StateDir::new(tempdir("ra")).with_vteps(claimed(1));
    let cred_a = dir_a.init_cluster(vtep(1)).unwrap();
    assert!(cred_a.attestation.admitter);
    let adm = Arc::new(Admission::from_state(&dir_a).unwrap().unwrap());
    let mut oa = opts(&dir_a, cred_a, [192, 168, 1, 1], 1);
    oa.admission = Some(Arc::clone(&adm));
    let a = transport::start(oa).unwrap();
    let addr_a = a.local_addr();
    let token = adm.token();

    // B joins through A: it stores its own key only, learns A as an admitter, and cannot admit.
    let dir_b = StateDir::new(tempdir("rb")).with_vteps(claimed(2));
    let cred_b = transport::join_cluster(addr_a, &token, &dir_b, vtep(2))
        .await
        .unwrap();
    assert!(!cred_b.attestation.admitter);
    assert_eq!(cred_b.attestation.vteps, claimed(2));
    assert_eq!(private_keys(&dir_b), vec!["node.key".to_string()]);
    assert_eq!(
        private_keys(&dir_a),
        vec!["ca.key".to_string(), "node.key".to_string()]
    );
    assert!(!dir_b.path().join("join.secret").exists());
    assert!(dir_b.ca_signer().unwrap().is_none());
    assert!(dir_a.ca_signer().unwrap().is_some());
    assert!(Admission::from_state(&dir_b).unwrap().is_none());
    assert_eq!(dir_b.load_admitters().unwrap(), vec![addr_a]);
    let stats_b: Arc<control::exposure::QuicStats> = Arc::default();
    let b_id = cred_b.node_id;
    let mut ob = opts(&dir_b, cred_b, [192, 168, 1, 2], 1);
    ob.quic = Arc::clone(&stats_b);
    let b = transport::start(ob).unwrap();
    b.join(addr_a).await.unwrap();
    let addr_b = b.local_addr();

    // C joins through B, which is not an admitter: B relays to A.
    let dir_c = StateDir::new(tempdir("rc")).with_vteps(claimed(3));
    let cred_c = transport::join_cluster(addr_b, &token, &dir_c, vtep(3))
        .await
        .unwrap();
    assert_eq!(private_keys(&dir_c), vec!["node.key".to_string()]);
    assert_eq!(
        dir_c.load_admitters().unwrap(),
        vec![addr_a],
        "A's address travels with the grant"
    );
    assert_eq!(cred_c.attestation.vteps, claimed(3));
    assert_eq!(stats_b.snapshot().joins_relayed, 1);

    // Rotation on A: through B, the old token is refused and the new one accepted.
    let new = adm.rotate().unwrap();
    let dir_d = StateDir::new(tempdir("rd")).with_vteps(claimed(4));
    let e = transport::join_cluster(addr_b, &token, &dir_d, vtep(4))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Refused { .. }), "{e}");
    assert!(!dir_d.is_initialised());
    transport::join_cluster(addr_b, &new, &dir_d, vtep(4))
        .await
        .unwrap();

    // B revoked (A, the admitter, signs): A refuses B's relay connections, so B brings no one in.
    assert_eq!(a.revoke(b_id).await.unwrap(), Ok(RevokeOutcome::Revoked));
    let dir_f = StateDir::new(tempdir("rf")).with_vteps(claimed(6));
    let e = transport::join_cluster(addr_b, &new, &dir_f, vtep(6))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::NoAdmitter { .. }), "{e}");
    assert!(!dir_f.is_initialised());

    // A gone: a join through B fails saying no admitter is reachable, and B keeps working.
    a.abort();
    let dir_e = StateDir::new(tempdir("re")).with_vteps(claimed(5));
    let e = transport::join_cluster(addr_b, &new, &dir_e, vtep(5))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TransportError::NoAdmitter { .. }) && e.to_string().contains("no admitter is reachable"),
        "{e}"
    );
    assert!(!dir_e.is_initialised());
    assert!(!b.members().await.unwrap().is_empty(), "B still answers");
    for d in [&dir_a, &dir_b, &dir_c, &dir_d, &dir_e, &dir_f] {
        let _ = std::fs::remove_dir_all(d.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_join_connections_are_capped_and_timed_out() {
    let dir = StateDir::new(tempdir("cap"));
    let cred = dir.init_cluster(IpAddr::from([192, 168, 2, 1])).unwrap();
    let stats: Arc<control::exposure::QuicStats> = Arc::default();
    let mut o = opts(&dir, cred, [192, 168, 2, 1], 1);
    o.quic = Arc::clone(&stats);
    o.limits = Limits {
        per_source: 2,
        join_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let a = transport::start(o).unwrap();
    let addr = a.local_addr();
    let token = dir.join_token().unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    ep.set_default_client_config(control::join::join_client_config(&token).unwrap());
    let connect = |wait: u64| {
        let c = ep.connect(addr, "overlayd").unwrap();
        tokio::time::timeout(Duration::from_millis(wait), c)
    };
    // Two idle join connections (handshake done, no request) take this source's two slots ...
    let c1 = connect(2500).await.expect("first handshake").unwrap();
    let c2 = connect(2500).await.expect("second handshake").unwrap();
    // ... so a third from the same source is ignored (until the member gives up on the idle ones at 3 s:
    // the client retransmits its Initial, so wait less than that).
    assert!(
        connect(1000).await.is_err(),
        "third concurrent connection from one source accepted"
    );
    assert!(
        stats.snapshot().refused_source_busy >= 1,
        "{:?}",
        stats.snapshot()
    );
    // Address validation: the first connection answered a Retry; the second did too, or presented
    // the one-use token the member sent on the first.
    let q = stats.snapshot();
    assert!(
        q.retries >= 1 && q.retries + q.token_validated >= 2,
        "address validation: {q:?}"
    );
    // The member gives up on idle joins after join_timeout and closes them, which frees the slots.
    for c in [&c1, &c2] {
        tokio::time::timeout(Duration::from_secs(5), c.closed())
            .await
            .expect("idle join connection closed by the member");
    }
    assert_eq!(stats.snapshot().join_timeouts, 2, "{:?}", stats.snapshot());
    let c3 = connect(2500).await.expect("slots released").unwrap();
    c3.close(0u32.into(), b"");
    a.abort();
    let _ = std::fs::remove_dir_all(dir.path());
}

fn vni() -> control::Vni {
    control::Vni::new(42).unwrap()
}
