//! One connection per pair (`super::super::opening`): who dials, who waits, crossings, refusals.

use super::*;

/// A pool with its accept loop running, as `start` builds it (no admission: joins are declined).
fn served_pool(cred: &NodeCredential, waits: opening::Waits) -> (Arc<Pool>, mpsc::Receiver<Inbound>) {
    let (pool, rx) = pool_with(cred, waits);
    let join = join_service(&pool, cred, YOUNG_DIAL);
    let accept = Arc::new(Accept {
        pool: Arc::clone(&pool),
        join,
        guard: Guard::new(Limits::default()),
        stats: Arc::clone(&pool.stats),
    });
    tokio::spawn(accept_loop(pool.endpoint.clone(), accept));
    (pool, rx)
}

/// The join service of `pool`'s endpoint, without admission (joins are declined, relays find no admitter).
fn join_service(pool: &Pool, cred: &NodeCredential, refused_retry: Duration) -> Arc<JoinService> {
    let directory = Arc::new(Directory {
        me: pool.me,
        admitters: Mutex::default(),
        members: Mutex::default(),
        admitters_file: None,
    });
    Arc::new(JoinService {
        admission: None,
        directory,
        endpoint: pool.endpoint.clone(),
        relay_client: member_client_config(cred, ALPN_RELAY).unwrap(),
        stats: Arc::clone(&pool.stats),
        relay_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        relay_next: Mutex::new(Instant::now()),
        serve_timeout: Duration::from_secs(5),
        refused_retry,
    })
}

/// Our dial to `to` is under way (started now, its Initial not sent yet), as `connection` marks it.
fn claim_dial(pool: &Pool, to: SocketAddr) {
    let link = pool.link(to);
    let mut l = link.lock();
    l.dialling = true;
    l.dial_since = Some(Instant::now());
}

/// Two served pools, returned as (lower address, higher address).
fn served_pair(tag: &str, waits: opening::Waits) -> (Arc<Pool>, Arc<Pool>, NodeCredential) {
    let cred = credential(tag);
    let (a, _) = served_pool(&cred, waits);
    let (b, _) = served_pool(&cred, waits);
    let (lo, hi) = if a.me < b.me { (a, b) } else { (b, a) };
    (lo, hi, cred)
}

/// Waits long enough that the outcome does not depend on how fast this machine schedules the test.
fn patient(grace: Duration) -> opening::Waits {
    opening::Waits {
        grace,
        incoming: Duration::from_secs(20),
        retry: Duration::from_secs(20),
        young: Duration::from_secs(20),
    }
}

/// `pool` revokes the node id of `cred` (both pools of a test pair hold the same credential, so: the
/// peer's).
fn revoke_the_credential(pool: &Pool, cred: &NodeCredential) {
    let id = crate::auth::node_id_from_cert(cred.chain.first().expect("a certificate"))
        .expect("a node id in the certificate");
    pool.revoked.write().unwrap().insert(id);
}

/// A sender of `from` asks for a connection to `to`; returns once it holds its dial (its episode is
/// registered), with the task that ends with what the sender got.
async fn holding_sender(
    from: &Arc<Pool>,
    to: SocketAddr,
) -> tokio::task::JoinHandle<Option<quinn::Connection>> {
    let sender = tokio::spawn({
        let from = Arc::clone(from);
        async move { from.connection(to).await }
    });
    soon("the sender holds its dial", async {
        while from.link(to).lock().wanted.is_none() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    sender
}

/// Within a functional deadline.
async fn soon<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 30 s"))
}

/// Both members of a pair want to send to each other at the same moment: the lower address dials, the
/// higher one holds its dial (grace, then the lower one's handshake in progress) and adopts that
/// connection. One handshake in all, and each side's message reaches the other over it. (hi's sender
/// asks first, so that on a loaded machine lo's connection cannot land before hi wants one: then
/// there would be no dial to avoid.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_sending_at_once_opens_one_connection() {
    let (lo, hi, _cred) = served_pair("once", patient(Duration::from_secs(20)));
    let (lo_addr, hi_addr) = (lo.me, hi.me);
    let waiting = holding_sender(&hi, lo_addr).await;
    let a = soon("lo's connection", lo.connection(hi_addr)).await;
    let b = soon("hi's connection", waiting).await.expect("hi's sender task");
    let (a, b) = (a.expect("lo's connection"), b.expect("hi's connection"));
    let (ql, qh) = (lo.stats.snapshot(), hi.stats.snapshot());
    assert_eq!(
        (ql.dials, qh.dials),
        (1, 0),
        "only the lower address dials: {ql:?} {qh:?}"
    );
    assert_eq!(
        (ql.handshakes, qh.handshakes),
        (0, 1),
        "one handshake: {ql:?} {qh:?}"
    );
    assert_eq!(qh.dials_avoided, 1, "{qh:?}");
    assert_eq!(a.remote_address(), hi_addr);
    assert_eq!(b.remote_address(), lo_addr);
    assert!(
        hi.link(lo_addr).lock().extra.is_empty(),
        "no second connection kept"
    );
}

/// The same, with the sends going through `send` as the pump does: both messages arrive, one handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_both_ways_share_the_lower_addresss_dial() {
    let cred = credential("both-ways");
    let waits = patient(Duration::from_secs(20));
    let (a, mut in_a) = served_pool(&cred, waits);
    let (b, mut in_b) = served_pool(&cred, waits);
    a.send(b.me, b"to b".to_vec());
    b.send(a.me, b"to a".to_vec());
    let (from, got) = soon("b receives", in_b.recv()).await.expect("inbound open");
    assert_eq!((from, got.as_slice()), (a.me, &b"to b"[..]));
    let (from, got) = soon("a receives", in_a.recv()).await.expect("inbound open");
    assert_eq!((from, got.as_slice()), (b.me, &b"to a"[..]));
    let (qa, qb) = (a.stats.snapshot(), b.stats.snapshot());
    assert_eq!(qa.dials + qb.dials, 1, "{qa:?} {qb:?}");
    assert_eq!(qa.handshakes + qb.handshakes, 1, "{qa:?} {qb:?}");
}

/// Only the higher address has something to send: it dials once the grace is over (not after the
/// longer wait for a peer handshake that never comes), and the lower one, sending alone, does not wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_sided_sender_waits_at_most_the_grace() {
    let grace = Duration::from_millis(300);
    let (lo, hi, _cred) = served_pair("one-sided", patient(grace));
    let t0 = Instant::now();
    let c = soon("hi's connection", hi.connection(lo.me))
        .await
        .expect("a connection");
    // Functional bound, far below the 20 s this pool would wait for a handshake of the peer's.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(c.remote_address(), lo.me);
    assert_eq!(hi.stats.snapshot().dials, 1);

    // The lower side of another pair, alone, dials without any hold at all.
    let (lo2, hi2, _cred) = served_pair("one-sided-lo", patient(Duration::from_secs(20)));
    let c = soon("lo's connection", lo2.connection(hi2.me))
        .await
        .expect("a connection");
    assert_eq!(c.remote_address(), hi2.me);
    assert_eq!(lo2.stats.snapshot().dials, 1);
}

/// A restarted peer's new connection still replaces the cached one (our acks must go to the new
/// process), also when it comes while our sender holds its dial for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peers_new_connection_replaces_the_cached_one() {
    let (lo, hi, _cred) = served_pair("restart", patient(Duration::from_secs(20)));
    // hi holds (grace) while lo's first connection arrives and is adopted by hi's accept loop.
    let first = soon("lo dials", lo.connection(hi.me))
        .await
        .expect("lo's connection");
    let held = soon("hi adopts", hi.connection(lo.me)).await.expect("adopted");
    assert_eq!(hi.stats.snapshot().dials, 0);
    // The "restarted" lo opens a fresh connection from the same address, the old one still open.
    let fresh = soon(
        "the new connection",
        lo.endpoint
            .connect_with(lo.client.clone(), hi.me, CLUSTER_SERVER_NAME)
            .unwrap(),
    )
    .await
    .expect("handshake");
    assert!(first.close_reason().is_none());
    let now = soon("adopted", async {
        loop {
            let c = hi.connection(lo.me).await.expect("a connection");
            if c.stable_id() != held.stable_id() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // hi now sends on the new connection: a stream it opens arrives on lo's fresh end.
    let mut s = now.open_uni().await.expect("stream");
    s.write_all(b"hello again").await.unwrap();
    s.finish().unwrap();
    let mut r = soon("lo's fresh end gets the stream", fresh.accept_uni())
        .await
        .expect("a stream on the new connection");
    assert_eq!(r.read_to_end(64).await.unwrap(), b"hello again");
    assert_eq!(hi.stats.snapshot().dials, 0, "no dial of hi's own");
}

/// A revoked peer's handshake towards us is still refused after it completes, and our sender, which
/// held its dial for it, does not get that connection: it dials, the dial is refused too, and the
/// sender gets nothing (back-off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peers_handshake_is_refused_and_not_waited_on() {
    let (lo, hi, cred) = served_pair("revoked-wait", patient(Duration::from_millis(300)));
    // hi revokes lo's node id.
    revoke_the_credential(&hi, &cred);
    let t0 = Instant::now();
    let (a, b) = soon("both senders give up or connect", async {
        tokio::join!(lo.connection(hi.me), hi.connection(lo.me))
    })
    .await;
    // hi refused lo's connection (code 4, "revoked") and did not take it; its own dial to lo was
    // refused as well, so hi's sender got nothing.
    assert!(b.is_none(), "hi must not use a revoked peer's connection");
    // hi stopped waiting when lo's connection was refused, not after the 20 s bound of the wait.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    if let Some(a) = a {
        assert_eq!(
            closed_with(&a).await,
            Some(4),
            "lo's connection to hi is closed as revoked"
        );
    }
    let q = hi.stats.snapshot();
    assert_eq!((q.dials, q.dial_failures), (1, 1), "{q:?}");
    assert!(hi.link(lo.me).lock().conn.is_none());
}

/// The same, with our sender already holding its dial for a Retry we sent to the revoked peer's address
/// when its connection is refused: the refusal ends that hold too (before, the sender waited out the
/// Retry's whole bound, here 20 s: the race a loaded machine hit in the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peers_refused_connection_ends_a_retry_hold() {
    let (lo, hi, cred) = served_pair("revoked-retry", patient(Duration::from_millis(300)));
    revoke_the_credential(&hi, &cred);
    // hi answered an Initial from lo's address with a Retry; hi's sender asks and holds for it.
    hi.opening.retried(lo.me, Instant::now(), &hi.waits);
    let t0 = Instant::now();
    let waiting = holding_sender(&hi, lo.me).await;
    let _ = soon("lo's dial ends", lo.connection(hi.me)).await;
    let b = soon("hi's sender gives up", waiting)
        .await
        .expect("hi's sender task");
    assert!(b.is_none(), "hi must not use a revoked peer's connection");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

/// Crossing dials: the lower address's dial is under way when the higher one's Initial arrives. The
/// lower one refuses it before any TLS work; the higher one counts no dial and no back-off, waits, and
/// sends on the lower one's connection once it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_dials_leave_only_the_lower_addresss_handshake() {
    let (lo, hi, _cred) = served_pair("crossing", patient(Duration::ZERO));
    // lo's dial to hi is under way (its Initial not sent yet).
    claim_dial(&lo, hi.me);
    let waiting = tokio::spawn({
        let hi = Arc::clone(&hi);
        let lo_addr = lo.me;
        async move { hi.connection(lo_addr).await }
    });
    soon("hi's dial is refused", async {
        while hi.stats.snapshot().dials_crossed == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(lo.stats.snapshot().refused_crossing, 1);
    assert!(!waiting.is_finished(), "hi waits for lo's connection");
    // lo's dial now goes out and completes; hi adopts it and its sender gets it.
    Arc::clone(&lo).dial(hi.me, lo.link(hi.me)).await;
    let got = soon("hi's sender", waiting)
        .await
        .unwrap()
        .expect("lo's connection, not a back-off");
    assert_eq!(got.remote_address(), lo.me);
    let (ql, qh) = (lo.stats.snapshot(), hi.stats.snapshot());
    assert_eq!((ql.dials, qh.dials), (1, 0), "{ql:?} {qh:?}");
    assert_eq!(
        (ql.handshakes, qh.handshakes),
        (0, 1),
        "one handshake: {ql:?} {qh:?}"
    );
    assert_eq!(qh.sends_dropped_backoff, 0);
    // Once connected, nothing is refused any more: a new connection from hi (its restart) gets in.
    assert!(!lo.refuse_crossing(hi.me));
}

/// A peer that keeps refusing our dials (its "own dial" never arrives) is waited for once, bounded, and
/// then treated as a failed dial: the sender gets the back-off, it does not wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_refusing_is_a_failed_dial() {
    let waits = opening::Waits {
        grace: Duration::ZERO,
        incoming: Duration::from_millis(200),
        retry: Duration::from_millis(200),
        young: Duration::from_secs(20),
    };
    let (lo, hi, _cred) = served_pair("refusing", waits);
    // lo claims a dial to hi that never goes out.
    claim_dial(&lo, hi.me);
    let got = soon("hi's sender gives up", hi.connection(lo.me)).await;
    assert!(got.is_none(), "no connection to a peer that only refuses");
    let q = hi.stats.snapshot();
    assert_eq!((q.dials_crossed, q.dials, q.dial_failures), (1, 1, 1), "{q:?}");
    assert_eq!(lo.stats.snapshot().refused_crossing, 2);
}

/// The lower address's dial to the peer is stuck (its Initial lost, or the peer was down when it
/// started and has restarted since): past the young window it no longer refuses the peer's connection.
/// The peer's dial gets in at once (no crossing, no failed dial) and the lower side adopts it while
/// its own dial is still under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_dial_of_the_lower_address_does_not_refuse_the_peer() {
    let waits = opening::Waits {
        young: opening::YOUNG_DIAL,
        ..patient(Duration::ZERO)
    };
    let (lo, hi, _cred) = served_pair("stuck", waits);
    {
        let link = lo.link(hi.me);
        let mut l = link.lock();
        l.dialling = true;
        l.dial_since = Instant::now().checked_sub(Duration::from_secs(2));
        assert!(l.dial_since.is_some());
    }
    assert!(!lo.refuse_crossing(hi.me), "an old dial refuses nothing");
    let got = soon("hi's connection", hi.connection(lo.me))
        .await
        .expect("hi's own dial, not a refusal and back-off");
    assert_eq!(got.remote_address(), lo.me);
    let (ql, qh) = (lo.stats.snapshot(), hi.stats.snapshot());
    assert_eq!(ql.refused_crossing, 0, "{ql:?}");
    assert_eq!(
        (qh.dials, qh.dial_failures, qh.dials_crossed),
        (1, 0, 0),
        "{qh:?}"
    );
    // lo sends on hi's connection although its own dial has not ended.
    let theirs = soon("lo adopts hi's connection", async {
        loop {
            if let Some(c) = lo.link(hi.me).lock().conn.clone() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(theirs.remote_address(), hi.me);
    assert!(lo.link(hi.me).lock().dialling, "lo's own dial is still under way");
    let c = soon("lo's sender", lo.connection(hi.me))
        .await
        .expect("a connection");
    assert_eq!(c.stable_id(), theirs.stable_id());
}

/// The higher address waits for the lower one's connection after a crossing; when that handshake fails
/// on its accept side, the wait ends at once and it dials (not after the crossing's or the Retry's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_ends_the_crossed_wait() {
    let waits = opening::Waits {
        incoming: Duration::from_secs(100),
        retry: Duration::from_secs(100),
        ..patient(Duration::ZERO)
    };
    let (lo, hi, _cred) = served_pair("crossed-fail", waits);
    // hi's dial was refused as crossing (it waits up to 100 s for lo's connection), and lo's handshake
    // towards hi (after hi's Retry to it) is in progress on hi's accept side.
    hi.link(lo.me).lock().crossed_until = Some(Instant::now() + Duration::from_secs(100));
    hi.retried(lo.me);
    let mark = hi.incoming_handshake(lo.me);
    let waiting = tokio::spawn({
        let hi = Arc::clone(&hi);
        let lo_addr = lo.me;
        async move { hi.connection(lo_addr).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "hi holds its dial for lo's connection");
    // That handshake fails (the mark is dropped unsettled, as the accept side does).
    drop(mark);
    let got = soon("hi dials", waiting)
        .await
        .unwrap()
        .expect("hi's own connection");
    assert_eq!(got.remote_address(), lo.me);
    let q = hi.stats.snapshot();
    assert_eq!((q.dials, q.dial_failures), (1, 0), "{q:?}");
}

/// A member relays a join from its gossip endpoint to an admitter with the lower address whose young
/// gossip dial to the member is under way: the admitter refuses the relay's first Initial as a crossing
/// (it cannot know the ALPN yet), and the relay asks again once instead of giving up (`NoAdmitter`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refused_as_a_crossing_asks_again() {
    let (lo, hi, cred) = served_pair("relay-refused", patient(Duration::ZERO));
    claim_dial(&lo, hi.me);
    // hi's relaying side, on hi's gossip endpoint; the retry comes well after the test's toggle below.
    let relay = join_service(&hi, &cred, Duration::from_secs(3));
    let asked = tokio::spawn({
        let lo_addr = lo.me;
        async move { relay.ask(lo_addr, b"not a real join request").await }
    });
    soon("lo refuses the relay's first Initial", async {
        while lo.stats.snapshot().refused_crossing == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // lo's dial ends (as it does past the young window or when it completes).
    lo.link(hi.me).lock().dialling = false;
    let answer = soon("the relay's answer", asked).await.unwrap();
    assert!(
        answer.is_some(),
        "the admitter answered the second attempt (here: it cannot admit)"
    );
    assert_eq!(lo.stats.snapshot().refused_crossing, 1);
}

/// Only the lower address of a pair refuses a crossing dial, so a CONNECTION_REFUSED from the higher
/// one (e.g. quinn refusing at its connection limit) is a failed dial, not a reason to wait.
#[test]
fn only_a_refusal_from_the_lower_address_is_a_crossing() {
    let closed = |code| {
        quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: code,
            frame_type: None,
            reason: Default::default(),
        })
    };
    let refused = closed(quinn::TransportErrorCode::CONNECTION_REFUSED);
    let (lo, hi): (SocketAddr, SocketAddr) =
        ("10.0.0.1:7948".parse().unwrap(), "10.0.0.2:7948".parse().unwrap());
    assert!(is_crossing_refusal(hi, lo, &refused), "the lower one refused us");
    assert!(
        !is_crossing_refusal(lo, hi, &refused),
        "the higher one never refuses a crossing"
    );
    assert!(!is_crossing_refusal(
        hi,
        lo,
        &closed(quinn::TransportErrorCode::PROTOCOL_VIOLATION)
    ));
}

/// A SWIM Announce (a join; a restarted or renewed node's first message) from the higher address is not
/// held by the grace: its receiver does not know the sender yet and will not dial it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announce_is_not_held_by_the_grace() {
    use crate::membership::NodeIdentity;
    let cred = credential("announce");
    let waits = patient(Duration::from_secs(20));
    let (p1, r1) = served_pool(&cred, waits);
    let (p2, r2) = served_pool(&cred, waits);
    let ((lo, mut in_lo), (hi, _in_hi)) = if p1.me < p2.me {
        ((p1, r1), (p2, r2))
    } else {
        ((p2, r2), (p1, r1))
    };
    let (src, dst) = (NodeIdentity::placeholder(hi.me), NodeIdentity::placeholder(lo.me));
    let announce = crate::sim::swim_packet(&src, &dst, foca::Message::Announce, &[], &[]);
    let gossip = crate::sim::swim_packet(&src, &dst, foca::Message::Gossip, &[], &[]);
    assert!(crate::messages::is_announce(&announce));
    assert!(!crate::messages::is_announce(&gossip) && !crate::messages::is_announce(b"\x08\x01junk"));
    let t0 = Instant::now();
    hi.send(lo.me, announce.clone());
    let (from, got) = soon("lo receives the announce", in_lo.recv())
        .await
        .expect("inbound open");
    assert_eq!((from, got), (hi.me, announce));
    // Functional bound, far below the 20 s grace this pool would otherwise hold its dial for.
    assert!(t0.elapsed() < Duration::from_secs(10), "held {:?}", t0.elapsed());
    assert_eq!(hi.stats.snapshot().dials, 1);
}
