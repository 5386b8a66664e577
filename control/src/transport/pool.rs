//! The per-peer gossip connection cache: one connection to send on per peer, dialled on demand.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use super::accept::read_streams;
use super::opening::{Opening, Waits, Wanted};
use super::{Inbound, CONNECT_TIMEOUT};
use crate::auth::{self, CLUSTER_SERVER_NAME};
use crate::exposure::QuicStats;
use crate::membership::NodeId;

/// One QUIC connection per peer to send on, whoever opened it. A newly accepted authenticated connection from a
/// peer replaces the cached one: after the peer restarts, our old connection to its previous process
/// is dead (the new process cannot even reset it), and without this our acks would vanish until the
/// idle timeout and the restarted peer would suspect us. While our own dial to a peer is under way, a
/// connection the peer opened to us is used at once: both members of a pair often dial each other at
/// the same moment while a cluster forms, and a member's answers (its table, its Hello) must not wait
/// for its own handshake when the peer's is done. The dial still finishes in the background (dropping it
/// mid-handshake makes the peer answer its remaining packets with Retries) and stays open for the
/// peer's streams, kept in the peer's slot ([`LinkState::extra`], at most [`MAX_EXTRA`]) so that a
/// revocation closes it too. Before dialling, a sender looks at what the peer is doing
/// ([`super::opening`]): if the peer's own handshake towards us is under way, it waits for that instead,
/// so a pair that wants to talk at once usually opens one connection, not two.
pub(super) struct Pool {
    pub(super) endpoint: quinn::Endpoint,
    /// Our advertised gossip address (which of a pair waits the grace before dialling).
    pub(super) me: SocketAddr,
    /// Bounds of the waits before a dial.
    pub(super) waits: Waits,
    /// Handshakes and Retries the accept side saw per source address.
    pub(super) opening: Opening,
    pub(super) client: quinn::ClientConfig,
    pub(super) peers: Mutex<HashMap<SocketAddr, Arc<Link>>>,
    pub(super) inbound: mpsc::Sender<Inbound>,
    /// Node ids of the revocation list (checked against the peer certificate of every connection).
    pub(super) revoked: RwLock<HashSet<NodeId>>,
    /// Dial counters (`quic.dials` …).
    pub(super) stats: Arc<QuicStats>,
}

/// The node id in the (CA-verified) certificate the peer presented.
pub(super) fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    auth::node_id_from_cert(certs.first()?)
}

/// Our connection to one peer and the senders waiting for one.
#[derive(Default)]
pub(super) struct Link {
    state: Mutex<LinkState>,
    /// Woken when a dial ends or a connection from the peer is adopted.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
pub(super) struct LinkState {
    /// The connection our messages to the peer go on.
    pub(super) conn: Option<quinn::Connection>,
    /// The peer's other open gossip connections (the late dial of a pair that dialled each other at once):
    /// not sent on, but the peer may send on them, so they stay reachable here for [`Pool::close_revoked`].
    pub(super) extra: Vec<quinn::Connection>,
    /// After a failed dial, drop messages to this peer until then instead of redialling per message.
    backoff_until: Option<Instant>,
    /// One dial at a time; concurrent sends wait for it (or for the peer's own connection).
    pub(super) dialling: bool,
    /// When the current (or last) dial started: only a young one refuses a crossing Initial.
    pub(super) dial_since: Option<Instant>,
    /// Senders are waiting for a connection without one open or dialled: since when, and what held them.
    pub(super) wanted: Option<Wanted>,
    /// Our dial crossed the peer's (it refused ours): hold new dials until then, waiting for the peer's.
    pub(super) crossed_until: Option<Instant>,
}

impl LinkState {
    /// Keep `c`, a connection to the peer we do not send on, reachable (and prune closed ones). At most
    /// [`MAX_EXTRA`] are kept: an older one is closed as superseded. Every connection here is fully
    /// established (a dial is never dropped mid-handshake, which made the peer answer with Retries), and
    /// each gossip message is on its own uni stream: what the close cuts off is at most a message in
    /// flight on a connection neither side prefers any more, and gossip tolerates that loss.
    fn shelve(&mut self, c: quinn::Connection) {
        self.extra.retain(|e| e.close_reason().is_none());
        if self.extra.iter().any(|e| e.stable_id() == c.stable_id()) {
            return;
        }
        self.extra.push(c);
        while self.extra.len() > MAX_EXTRA {
            let old = self.extra.remove(0);
            old.close(5u32.into(), b"superseded");
        }
    }

    /// Close every connection of this slot whose peer certificate names `node`.
    fn close_node(&mut self, node: NodeId) {
        let theirs = |c: &quinn::Connection| peer_node_id(c) == Some(node);
        if self.conn.as_ref().is_some_and(theirs) {
            if let Some(c) = self.conn.take() {
                c.close(4u32.into(), b"revoked");
            }
        }
        self.extra.retain(|c| {
            if theirs(c) {
                c.close(4u32.into(), b"revoked");
            }
            !theirs(c) && c.close_reason().is_none()
        });
    }
}

impl Link {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Did the peer refuse our dial at its first packet (QUIC CONNECTION_REFUSED, what
/// [`Pool::refuse_crossing`] sends)? Only the lower address of a pair refuses that way, so a refusal
/// from a higher address (quinn also refuses when an endpoint is at its connection limit) is a failed
/// dial. From a lower address an endpoint-level refusal still looks like a crossing: the packet is not
/// authenticated either, so this is only a hint, and it makes us wait, bounded and once in a row, for
/// the peer's own connection instead of dialling again.
pub(super) fn is_crossing_refusal(me: SocketAddr, peer: SocketAddr, e: &quinn::ConnectionError) -> bool {
    peer < me
        && matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

/// Held while a handshake from a peer's address is in progress on our accept side.
pub(super) struct IncomingMark {
    pool: Arc<Pool>,
    from: SocketAddr,
    /// The handshake completed and the accept side dealt with its connection ([`IncomingMark::settled`]).
    settled: bool,
}

impl IncomingMark {
    /// The handshake completed and its connection was adopted (or refused by [`Pool::adopt`], which
    /// then wakes the senders itself) or serves a join or relay: a crossing wait is not ended by it.
    pub(super) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for IncomingMark {
    fn drop(&mut self) {
        self.pool.opening.handshake_ended(self.from);
        // Wake senders holding their dial for it (if adopted, they find the connection; else they dial).
        if let Some(link) = self.pool.existing_link(self.from) {
            if !self.settled {
                // The handshake failed (or was not a member's gossip connection): if our senders were
                // waiting for it after a crossing, that wait ends now and they dial.
                // A Retry mark this wait counted belonged to that handshake too.
                let mut l = link.lock();
                l.crossed_until = None;
                if let Some(w) = l.wanted.as_mut() {
                    w.retry_over(Instant::now());
                }
            }
            link.changed.notify_waiters();
        }
    }
}

/// Open connections to one peer kept besides the one we send on: the late dial of a pair that dialled
/// each other at once (each side may send on the connection the other opened). More only come from
/// re-dials and restarts, which supersede them.
const MAX_EXTRA: usize = 1;

/// After a failed dial, how long messages to that peer are dropped (SWIM treats it as loss).
const DIAL_BACKOFF: Duration = Duration::from_secs(1);

fn usable(conn: &Option<quinn::Connection>) -> Option<&quinn::Connection> {
    conn.as_ref().filter(|c| c.close_reason().is_none())
}

impl Pool {
    /// Round-trip estimates of the open connections (a sample for a histogram).
    pub(super) fn rtts(&self) -> Vec<Duration> {
        let links: Vec<_> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.values().cloned().collect()
        };
        links
            .iter()
            .filter_map(|l| usable(&l.lock().conn).map(quinn::Connection::rtt))
            .collect()
    }

    /// Does the peer's certificate name a revoked node (or no node at all)?
    pub(super) fn is_revoked(&self, conn: &quinn::Connection) -> bool {
        match peer_node_id(conn) {
            Some(id) => self
                .revoked
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&id),
            None => true,
        }
    }

    /// Enforce a new revocation: close every connection to that node.
    pub(super) fn close_revoked(&self, node: NodeId) {
        self.revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node);
        let links: Vec<_> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.values().cloned().collect()
        };
        // The node is in `revoked` before any slot is locked here, so `adopt` and `dial`, which check
        // it under the slot lock before storing a connection, either see it or store before we look.
        for link in links {
            link.lock().close_node(node);
        }
    }

    /// The slot of `addr` if it has one (unlike [`Self::link`], which creates it).
    fn existing_link(&self, addr: SocketAddr) -> Option<Arc<Link>> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&addr).cloned()
    }

    pub(super) fn link(&self, to: SocketAddr) -> Arc<Link> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(peers.entry(to).or_default())
    }

    /// Adopt an accepted connection from `from` for our own sends too (also those waiting for a dial).
    /// A revoked peer's connection is closed instead (`false`: do not read it).
    pub(super) fn adopt(&self, from: SocketAddr, conn: quinn::Connection) -> bool {
        let link = self.link(from);
        {
            let mut l = link.lock();
            if self.is_revoked(&conn) {
                conn.close(4u32.into(), b"revoked");
                // Senders holding their dial for this connection stop waiting (their dial is refused
                // too): after a crossing, or for the Retry mark of the Initial that led to it (which
                // the accept side's mark, settled here, no longer ends).
                l.crossed_until = None;
                if let Some(w) = l.wanted.as_mut() {
                    w.retry_over(Instant::now());
                }
                drop(l);
                link.changed.notify_waiters();
                return false;
            }
            if let Some(old) = l.conn.replace(conn) {
                if old.close_reason().is_none() {
                    l.shelve(old);
                }
            }
            l.backoff_until = None;
            l.crossed_until = None;
            // Senders were holding their dial (for this handshake, or the grace): none happens now.
            if l.wanted.take().is_some() && !l.dialling {
                self.stats.count_dial_avoided();
            }
        }
        link.changed.notify_waiters();
        true
    }

    /// [`Self::connection_for`] a message that is not a SWIM Announce.
    #[cfg(test)]
    pub(super) async fn connection(self: &Arc<Self>, to: SocketAddr) -> Option<quinn::Connection> {
        self.connection_for(to, &[]).await
    }

    /// An open connection to `to`: the cached one, else whichever comes first of our dial and the
    /// peer's own connection to us. Our dial waits while the peer's handshake towards us is under way,
    /// and on the higher address of a pair for the grace ([`super::opening`]). `None` while the peer is
    /// in its dial back-off.
    /// The sender of a SWIM Announce (`bytes`, read only when no connection is open) does not wait the
    /// grace ([`Wanted::announce`]).
    async fn connection_for(self: &Arc<Self>, to: SocketAddr, bytes: &[u8]) -> Option<quinn::Connection> {
        let link = self.link(to);
        loop {
            // Registered before the state is read, so a change in between still wakes us.
            let changed = link.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let hold = {
                let mut l = link.lock();
                if let Some(c) = usable(&l.conn) {
                    return Some(c.clone());
                }
                if l.backoff_until.is_some_and(|t| Instant::now() < t) {
                    self.stats.count_backoff_drop();
                    return None;
                }
                if l.dialling {
                    None
                } else {
                    let now = Instant::now();
                    let crossed = l.crossed_until;
                    let wanted = l.wanted.get_or_insert(Wanted::new(now));
                    wanted.announce = wanted.announce || crate::messages::is_announce(bytes);
                    let hold = wanted.hold_until(self.me, to, &self.opening, crossed, now, &self.waits);
                    if hold.is_none() {
                        l.dialling = true;
                        l.dial_since = Some(now);
                        l.wanted = None;
                        tokio::spawn(Arc::clone(self).dial(to, Arc::clone(&link)));
                    }
                    hold
                }
            };
            match hold {
                Some(until) => {
                    tokio::select! {
                        () = &mut changed => {}
                        () = tokio::time::sleep_until(until.into()) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// A handshake from `from` reached our accept side: senders to `from` wait for it (see
    /// [`super::opening`]) until the returned mark is dropped (handshake done, adopted or failed).
    pub(super) fn incoming_handshake(self: &Arc<Self>, from: SocketAddr) -> IncomingMark {
        self.opening.handshake_started(from, Instant::now());
        IncomingMark {
            pool: Arc::clone(self),
            from,
            settled: false,
        }
    }

    /// Refuse a new connection from `from` (before any TLS work) because our own dial to it is under
    /// way, younger than [`Waits::young`], and we have the lower address: of two crossing dials, the
    /// lower address's goes on. The peer then waits for our connection instead of dialling again
    /// ([`is_crossing_refusal`]). An older dial of ours is likely stuck (its Initial lost, or the peer was
    /// down when it started and has restarted): the peer's connection is accepted and adopted, and our
    /// dial, when it ends, is kept besides it. The source address is not validated yet here (a spoofed
    /// Initial is refused and counted the same way; it costs us no state).
    pub(super) fn refuse_crossing(&self, from: SocketAddr) -> bool {
        if self.me >= from {
            return false;
        }
        let Some(link) = self.existing_link(from) else {
            return false;
        };
        let l = link.lock();
        l.dialling
            && usable(&l.conn).is_none()
            && l.dial_since
                .is_some_and(|t| Instant::now() < t + self.waits.young)
    }

    /// The accept loop answered an Initial from `from` with a Retry.
    pub(super) fn retried(&self, from: SocketAddr) {
        self.opening.retried(from, Instant::now(), &self.waits);
    }

    /// Dial `to` and record the outcome in its link. A connection the peer opened meanwhile stays the
    /// one we send on; ours stays open for the peer's streams.
    pub(super) async fn dial(self: Arc<Self>, to: SocketAddr, link: Arc<Link>) {
        let started = Instant::now();
        let mut crossed = false;
        let dial = async {
            let connecting = self
                .endpoint
                .connect_with(
                    super::tokens::client_config_for(&self.client, to),
                    to,
                    CLUSTER_SERVER_NAME,
                )
                .ok()?;
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.ok()? {
                Ok(c) => Some(c),
                Err(e) => {
                    crossed = is_crossing_refusal(self.me, to, &e);
                    None
                }
            }
        };
        let dialled = dial.await;
        if crossed {
            // The peer refused our Initial because its own dial to us is under way (it has the lower
            // address): no handshake was made. Senders wait for the peer's connection instead (bounded),
            // no back-off; but only once in a row, so a peer that keeps refusing is a failed dial.
            let first = {
                let mut l = link.lock();
                let first = l.crossed_until.is_none();
                if first {
                    l.dialling = false;
                    if usable(&l.conn).is_none() {
                        l.crossed_until = Some(Instant::now() + self.waits.incoming);
                    }
                } else {
                    l.crossed_until = None;
                }
                first
            };
            if first {
                self.stats.count_dial_crossed();
                tracing::debug!(%to, ms = started.elapsed().as_secs_f64() * 1e3, "dial crossed");
                link.changed.notify_waiters();
                return;
            }
        }
        // A revoked peer's connection is closed at once below: a failed dial, like one refused.
        let ok = dialled.as_ref().filter(|c| !self.is_revoked(c));
        self.stats.count_dial(ok, started.elapsed());
        tracing::debug!(%to, ok = ok.is_some(), ms = started.elapsed().as_secs_f64() * 1e3, "dial done");
        {
            let mut l = link.lock();
            l.dialling = false;
            l.crossed_until = None;
            match dialled {
                // Checked under the slot lock: see `close_revoked`.
                Some(conn) if self.is_revoked(&conn) => {
                    conn.close(4u32.into(), b"revoked");
                    // Only what is itself revoked or closed goes; another usable connection stays.
                    if l.conn.as_ref().is_some_and(|c| self.is_revoked(c)) {
                        if let Some(c) = l.conn.take() {
                            c.close(4u32.into(), b"revoked");
                        }
                    }
                    if usable(&l.conn).is_none() {
                        l.conn = None;
                        l.backoff_until = Some(Instant::now() + DIAL_BACKOFF);
                    }
                }
                Some(conn) => {
                    // The peer may also open streams on the connection we initiated.
                    tokio::spawn(read_streams(conn.clone(), self.inbound.clone()));
                    if usable(&l.conn).is_none() {
                        l.conn = Some(conn);
                    } else {
                        l.shelve(conn);
                    }
                    l.backoff_until = None;
                }
                // The peer's own connection, if one came meanwhile, still carries our messages.
                None if usable(&l.conn).is_some() => {}
                None => {
                    l.conn = None;
                    l.backoff_until = Some(Instant::now() + DIAL_BACKOFF);
                }
            }
        }
        link.changed.notify_waiters();
    }

    pub(super) fn send(self: &Arc<Self>, to: SocketAddr, bytes: Vec<u8>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let Some(conn) = pool.connection_for(to, &bytes).await else {
                return;
            };
            if let Ok(mut s) = conn.open_uni().await {
                // Membership first: quinn sends higher-priority streams of a connection before
                // others, so a probe or ack never waits behind a table piece (the node's gossip
                // budget keeps the path itself from filling up with sync traffic).
                if crate::messages::is_swim(&bytes) {
                    let _ = s.set_priority(1);
                }
                let _ = s.write_all(&bytes).await;
                let _ = s.finish();
            }
        });
    }
}
