use super::pool::{is_crossing_refusal, peer_node_id, Pool};
use super::socket::{force_recv_buffer, GOSSIP_RCVBUF};
use super::*;
use crate::auth::CLUSTER_SERVER_NAME;

fn credential(tag: &str) -> NodeCredential {
    let dir = std::env::temp_dir().join(format!("overlayd-pool-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    StateDir::new(dir)
        .with_vteps(vec![IpAddr::from([127, 0, 0, 1])])
        .init_cluster(IpAddr::from([127, 0, 0, 1]))
        .expect("init cluster")
}

/// A pool on its own endpoint (server and client), as `start` builds it.
fn pool(cred: &NodeCredential) -> (Arc<Pool>, mpsc::Receiver<Inbound>) {
    pool_with(cred, opening::Waits::default())
}

fn pool_with(cred: &NodeCredential, waits: opening::Waits) -> (Arc<Pool>, mpsc::Receiver<Inbound>) {
    let socket = bind_gossip_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(cred).unwrap()),
        socket,
        quinn::default_runtime().unwrap(),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let me = endpoint.local_addr().unwrap();
    let pool = Arc::new(Pool {
        endpoint,
        me,
        waits,
        opening: opening::Opening::default(),
        client: gossip_client_config(cred).unwrap(),
        peers: Mutex::default(),
        inbound: tx,
        revoked: RwLock::default(),
        stats: Arc::default(),
    });
    (pool, rx)
}

/// The next connection `p`'s endpoint accepts, handshake done (spawned, so the caller can dial meanwhile).
fn accept_next(p: &Arc<Pool>) -> tokio::task::JoinHandle<quinn::Connection> {
    let p = Arc::clone(p);
    tokio::spawn(async move {
        p.endpoint
            .accept()
            .await
            .unwrap()
            .accept()
            .unwrap()
            .await
            .unwrap()
    })
}

/// The peer dials us while our own dial to it is still under way: the senders waiting for our dial
/// get the peer's connection at once, and our dial, finishing later, does not replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_senders_take_the_peers_connection_and_a_late_dial_keeps_it() {
    let cred = credential("either");
    let (ours, mut in_ours) = pool(&cred);
    let (peer, _in_peer) = pool(&cred);
    let peer_addr = peer.endpoint.local_addr().unwrap();
    // Our dial to the peer is under way (its handshake not answered yet).
    ours.link(peer_addr).lock().dialling = true;
    let waiting = tokio::spawn({
        let ours = Arc::clone(&ours);
        async move { ours.connection(peer_addr).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a sender went ahead without a connection");
    // The peer's connection to us arrives and is adopted, as the accept loop does.
    let (accepted, _peers_side) = peer_connects(&ours, &peer).await;
    assert_eq!(accepted.remote_address(), peer_addr);
    assert!(ours.adopt(peer_addr, accepted.clone()));
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting sender was not woken by the adopted connection")
        .unwrap()
        .expect("a connection");
    assert_eq!(got.stable_id(), accepted.stable_id());

    // Our own dial now completes: it is counted, kept open, and the adopted connection stays.
    let peer_accepts = accept_next(&peer);
    Arc::clone(&ours).dial(peer_addr, ours.link(peer_addr)).await;
    let dialled = peer_accepts.await.unwrap();
    let q = ours.stats.snapshot();
    assert_eq!((q.dials, q.dial_failures), (1, 0), "{q:?}");
    let now = ours.connection(peer_addr).await.expect("a connection");
    assert_eq!(now.stable_id(), accepted.stable_id());
    assert!(!ours.link(peer_addr).lock().dialling);
    // The late dial is kept open and read: a message the peer sends on it reaches our node.
    let mut s = dialled.open_uni().await.expect("a stream on the late dial");
    s.write_all(b"on the late dial").await.unwrap();
    s.finish().unwrap();
    let (from, bytes) = tokio::time::timeout(Duration::from_secs(5), in_ours.recv())
        .await
        .expect("the message on the late-dialled connection was not received")
        .expect("inbound open");
    assert_eq!((from, bytes.as_slice()), (peer_addr, &b"on the late dial"[..]));
    assert!(dialled.close_reason().is_none());
}

/// `peer` dials `ours` and `ours` accepts (not adopted yet). Returns (our end, the peer's end).
async fn peer_connects(ours: &Arc<Pool>, peer: &Arc<Pool>) -> (quinn::Connection, quinn::Connection) {
    let our_addr = ours.endpoint.local_addr().unwrap();
    let accept = accept_next(ours);
    let theirs = peer
        .endpoint
        .connect_with(peer.client.clone(), our_addr, CLUSTER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let c = accept.await.unwrap();
    (c, theirs)
}

/// `peer` dials `ours`; `ours` accepts and adopts the connection as the accept loop does. Returns
/// (our end, the peer's end).
async fn peer_dials_us(ours: &Arc<Pool>, peer: &Arc<Pool>) -> (quinn::Connection, quinn::Connection) {
    let (c, theirs) = peer_connects(ours, peer).await;
    assert!(ours.adopt(c.remote_address(), c.clone()), "adopted");
    (c, theirs)
}

/// `ours` dials `peer` through the pool (as a sender would); returns the peer's end.
async fn we_dial_peer(ours: &Arc<Pool>, peer: &Arc<Pool>) -> quinn::Connection {
    let peer_addr = peer.endpoint.local_addr().unwrap();
    let peer_accepts = accept_next(peer);
    ours.link(peer_addr).lock().dialling = true;
    Arc::clone(ours).dial(peer_addr, ours.link(peer_addr)).await;
    peer_accepts.await.unwrap()
}

/// How the peer saw a connection end (within a functional deadline).
async fn closed_with(c: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(5), c.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(a)) => Some(a.error_code.into_inner()),
        _ => None,
    }
}

/// Fail closed: after the peer's connection is in use, our late dial is kept open for the peer's
/// streams; revoking the peer closes both (the late dial must not stay open for a revoked node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_peer_closes_its_late_dialled_connection_too() {
    let cred = credential("revoke-both");
    let (ours, _in_ours) = pool(&cred);
    let (peer, _in_peer) = pool(&cred);
    let (accepted, peers_side) = peer_dials_us(&ours, &peer).await;
    let dialled = we_dial_peer(&ours, &peer).await;
    assert!(dialled.close_reason().is_none(), "the late dial stays open");
    let our_dial = {
        let l = ours.link(peer.endpoint.local_addr().unwrap());
        let l = l.lock();
        assert_eq!(l.conn.as_ref().map(|c| c.stable_id()), Some(accepted.stable_id()));
        l.extra
            .first()
            .cloned()
            .expect("the late dial is kept in the slot")
    };
    let id = peer_node_id(&accepted).expect("the peer's node id");
    ours.revoked.write().unwrap().insert(id);
    ours.close_revoked(id);
    assert_eq!(closed_with(&peers_side).await, Some(4), "the peer's connection");
    assert_eq!(closed_with(&dialled).await, Some(4), "our late dial");
    assert!(accepted.close_reason().is_some());
    assert!(our_dial.close_reason().is_some());
    let l = ours.link(peer.endpoint.local_addr().unwrap());
    let l = l.lock();
    assert!(l.conn.is_none() && l.extra.is_empty());
}

/// Repeated connections from a live peer (re-dials, restarts) do not pile up: the slot keeps the
/// newest plus one more open and closes older ones as superseded (code 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_adopts_keep_at_most_two_connections_per_peer() {
    let cred = credential("superseded");
    let (ours, _in_ours) = pool(&cred);
    let (peer, _in_peer) = pool(&cred);
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(peer_dials_us(&ours, &peer).await);
    }
    let open = conns.iter().filter(|(o, _)| o.close_reason().is_none()).count();
    assert_eq!(open, 2, "open connections to the peer on our side");
    for (_, theirs) in &conns[..2] {
        assert_eq!(
            closed_with(theirs).await,
            Some(5),
            "an older connection is closed as superseded"
        );
    }
    for (o, theirs) in &conns[2..] {
        assert!(o.close_reason().is_none() && theirs.close_reason().is_none());
    }
    let newest = conns[3].0.stable_id();
    let l = ours.link(peer.endpoint.local_addr().unwrap());
    assert_eq!(
        l.lock().conn.as_ref().map(|c| c.stable_id()),
        Some(newest),
        "we send on the newest"
    );
    // A late dial of ours, too, only shadows: still two open.
    let _dialled = we_dial_peer(&ours, &peer).await;
    let l = l.lock();
    let open = l
        .extra
        .iter()
        .chain(&l.conn)
        .filter(|c| c.close_reason().is_none())
        .count();
    assert_eq!(open, 2);
    assert_eq!(l.conn.as_ref().map(|c| c.stable_id()), Some(newest));
}

/// A revocation that lands between the accept loop's handshake and the adoption is not missed:
/// `adopt` re-checks under the slot lock, closes the connection and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_refuses_a_revoked_peer() {
    let cred = credential("revoke-adopt");
    let (ours, _in_ours) = pool(&cred);
    let (peer, _in_peer) = pool(&cred);
    let (accepted, theirs) = peer_connects(&ours, &peer).await;
    let id = peer_node_id(&accepted).expect("the peer's node id");
    ours.revoked.write().unwrap().insert(id);
    assert!(!ours.adopt(accepted.remote_address(), accepted.clone()));
    assert_eq!(closed_with(&theirs).await, Some(4));
    assert!(ours.link(accepted.remote_address()).lock().conn.is_none());
}

/// The gossip socket gets the larger receive buffer, on IPv4 and IPv6 (the kernel reports double the
/// granted size): the full size as root (SO_RCVBUFFORCE ignores `net.core.rmem_max`), else as far as
/// `net.core.rmem_max` allows.
#[test]
fn gossip_socket_has_a_large_receive_buffer() {
    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("read /proc/sys/net/core/rmem_max")
        .trim()
        .parse()
        .expect("rmem_max is a number");
    let default: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .expect("read /proc/sys/net/core/rmem_default")
        .trim()
        .parse()
        .expect("rmem_default is a number");
    // Effective uid: the second field of `Uid:` in /proc/self/status (tests run as root).
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid: line")
        == "0";
    let want = if root {
        GOSSIP_RCVBUF
    } else {
        GOSSIP_RCVBUF.min(cap)
    };
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let s = bind_gossip_socket(addr.parse().unwrap()).expect("bind");
        let got = socket2::SockRef::from(&s).recv_buffer_size().expect("SO_RCVBUF");
        assert!(got >= 2 * want, "{addr}: {got} bytes, want 2 x {want}");
        assert!(got >= 2 * default.min(cap), "{addr}: smaller than the default");
        assert_ne!(s.local_addr().unwrap().port(), 0, "{addr}: bound");
    }
    // As root the size is not capped by `net.core.rmem_max` (whatever this machine's is).
    if root {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        assert_eq!(
            force_recv_buffer(&s, 2 * cap),
            2 * cap,
            "beyond net.core.rmem_max = {cap}"
        );
    }
}

mod one_connection;
