//! Incoming connections of the gossip endpoint: address validation, caps, ALPN dispatch, and the
//! reading of an authenticated gossip connection into the pump.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use super::pool::Pool;
use super::{Inbound, ALPN_GOSSIP, ALPN_JOIN, ALPN_RELAY, MAX_MESSAGE};
use crate::admission::JoinService;
use crate::exposure::{Guard, QuicStats, SourcePermit};

/// Read every uni stream of an authenticated gossip connection into the pump.
pub(super) async fn read_streams(conn: quinn::Connection, tx: mpsc::Sender<Inbound>) {
    let from = conn.remote_address();
    while let Ok(mut recv) = conn.accept_uni().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Ok(bytes) = recv.read_to_end(MAX_MESSAGE).await {
                // Full queue: drop (gossip tolerates loss) rather than stall the connection.
                let _ = tx.try_send((from, bytes));
            }
        });
    }
}

/// Accept loop: address validation (Retry), then the guard's per-source and total caps; everything
/// after that runs in its own task so the loop never waits on a handshake.
pub(super) async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<Accept>) {
    while let Some(incoming) = endpoint.accept().await {
        if ctx.pool.refuse_crossing(incoming.remote_address()) {
            // Our own young dial to this member is under way and wins (lower address): no second
            // handshake. Before address validation: a spoofed Initial is refused (and counted) too.
            ctx.stats.count_refused_crossing();
            incoming.refuse();
            continue;
        }
        if !incoming.remote_address_validated() {
            // Stateless: no TLS work and no state until the source proves it receives our packets.
            ctx.stats.count_retry();
            ctx.pool.retried(incoming.remote_address());
            let _ = incoming.retry();
            continue;
        }
        if incoming.may_retry() {
            // Validated without a Retry: it presented a token from an earlier connection.
            ctx.stats.count_token_validated();
        }
        match ctx.guard.begin(incoming.remote_address().ip(), Instant::now()) {
            Ok(permit) => {
                tokio::spawn(handle_incoming(incoming, permit, Arc::clone(&ctx)));
            }
            Err(r) => {
                ctx.stats.count_refusal(r);
                incoming.ignore();
            }
        }
    }
}

/// What the accept loop and its connection tasks share.
pub(super) struct Accept {
    pub(super) pool: Arc<Pool>,
    pub(super) join: Arc<JoinService>,
    pub(super) guard: Arc<Guard>,
    pub(super) stats: Arc<QuicStats>,
}

fn is_authenticated(conn: &quinn::Connection) -> bool {
    // rustls already verified any presented certificate against the CA; require that one was.
    conn.peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())
        .is_some_and(|c| !c.is_empty())
}

async fn handle_incoming(incoming: quinn::Incoming, permit: SourcePermit, ctx: Arc<Accept>) {
    let t0 = Instant::now();
    let from = incoming.remote_address();
    // Our senders to `from` hold their own dial while this handshake runs (one connection per pair).
    let mark = ctx.pool.incoming_handshake(from);
    let handshake = async {
        // Queued (FIFO) behind the total cap rather than refused.
        let _slot = ctx.guard.handshake_slot().await?;
        incoming.accept().ok()?.await.ok()
    };
    let conn = match tokio::time::timeout(ctx.guard.limits().handshake_timeout, handshake).await {
        Ok(Some(c)) => {
            ctx.stats.count_handshake(true);
            c
        }
        _ => {
            ctx.stats.count_handshake(false);
            return;
        }
    };
    // Settled once the connection is adopted (or refused) below, or now if it is not gossip; dropped
    // unsettled if the handshake failed or the connection is no member's (senders then dial at once).
    let mut mark = Some(mark);
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    tracing::debug!(%from, alpn = ?alpn.as_deref().map(String::from_utf8_lossy), ms = t0.elapsed().as_secs_f64() * 1e3, "accepted handshake done");
    if alpn.as_deref() != Some(ALPN_GOSSIP) {
        if let Some(m) = mark.take() {
            m.settled();
        }
    }
    match alpn.as_deref() {
        Some(p) if p == ALPN_GOSSIP => {
            // A member's long-lived connection: it no longer counts against its source's handshake slots.
            drop(permit);
            if !is_authenticated(&conn) {
                conn.close(1u32.into(), b"client certificate required");
                return;
            }
            // `adopt` checks the revocation list under the peer's slot lock (and closes the connection
            // if the peer is revoked), so a revocation arriving after the handshake is never missed.
            let adopted = ctx.pool.adopt(conn.remote_address(), conn.clone());
            if let Some(m) = mark.take() {
                m.settled();
            }
            if !adopted {
                return;
            }
            read_streams(conn, ctx.pool.inbound.clone()).await;
        }
        // Unauthenticated join: the source's slot stays taken until the join is answered or times out.
        Some(p) if p == ALPN_JOIN => Arc::clone(&ctx.join).serve(conn, true).await,
        Some(p) if p == ALPN_RELAY => {
            if !is_authenticated(&conn) {
                conn.close(1u32.into(), b"client certificate required");
            } else if ctx.pool.is_revoked(&conn) {
                // A revoked member must not keep relaying joiners into the cluster.
                conn.close(4u32.into(), b"revoked");
            } else {
                Arc::clone(&ctx.join).serve(conn, false).await;
            }
        }
        _ => conn.close(3u32.into(), b"unsupported ALPN"),
    }
}
