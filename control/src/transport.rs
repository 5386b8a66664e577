//! QUIC shell around [`ControlNode`]: one quinn endpoint on the gossip port (UDP, default 7948) that both
//! accepts and initiates connections, rustls with TLS 1.3 only, no 0-RTT, ALPN pinned.
//!
//! - ALPN `overlayd-gossip/1`: mutual TLS against the cluster CA. A peer that presents no certificate is
//!   closed before any byte reaches the state machine; one with a certificate from another CA fails the
//!   handshake. Each gossip message travels on its own unidirectional stream (no size limit beyond
//!   [`MAX_MESSAGE`], loss becomes retransmission delay).
//! - ALPN `overlayd-join/1`: the joiner has no credential yet; handled by [`crate::join`].
//! - ALPN `overlayd-relay/1`: mutual TLS; a member without the CA key forwards a joiner's request to an
//!   admitter ([`crate::admission`]).
//!
//! Every incoming connection first passes [`crate::exposure`]: a stateless Retry unless the source
//! address is validated, per-source and total caps, a handshake timeout.
//!
//! [`start`] spawns the pump: it feeds received messages, commands and due timers to the node and acts
//! on its outputs; every [`Output`] other than `Send`/`ScheduleTimer` (FDB, flood sets, networks,
//! blocks, membership, revocations) reaches the daemon unchanged through [`GossipHandle::events`].
//! Revoked nodes: a connection whose peer certificate names a revoked node id is closed right after the
//! handshake (both directions), and existing connections to a node are closed when its revocation arrives.
//! Must never: hand unauthenticated bytes (or a revoked node's bytes) to the state machine, or block the
//! pump on a slow peer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::sync::{mpsc, oneshot};

use crate::admission::{Directory, JoinService};
use crate::auth::{self, AuthError, NodeCredential, StateDir, CLUSTER_SERVER_NAME};
use crate::exposure::{Guard, Limits, QuicStats, SourcePermit};
use crate::membership::{NodeId, NodeIdentity};
use crate::node::{
    BlockOutcome, ControlConfig, ControlNode, ControlStats, MemberInfo, MemberState, NetworkInfo,
    RevokeOutcome, Trust,
};
use crate::revocation::RevocationList;
use crate::{ControlError, MacAddr, NetworkDef, Output, PeerAddr, Timer, Vni};

pub const ALPN_GOSSIP: &[u8] = b"overlayd-gossip/1";
pub const ALPN_JOIN: &[u8] = b"overlayd-join/1";
pub const ALPN_RELAY: &[u8] = b"overlayd-relay/1";
/// Largest gossip message accepted on one stream.
pub const MAX_MESSAGE: usize = 256 * 1024;

pub use crate::admission::Admission;
pub use crate::join::join_cluster;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the transport could not start or a join failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind gossip endpoint on UDP {addr}: {source} (is another overlayd running, or --gossip-port taken?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0} (the credential in the state dir may be corrupt; re-join the node)")]
    Tls(String),
    #[error("cannot connect to member {addr}: {reason} (if it timed out: check the address, --gossip-port and UDP firewalling)")]
    Connect { addr: SocketAddr, reason: String },
    #[error("member {addr} refused the join: {reason}")]
    Refused { addr: SocketAddr, reason: String },
    #[error("member {addr} cannot admit: {reason}")]
    NoAdmitter { addr: SocketAddr, reason: String },
    #[error("join protocol error with {addr}: {reason} (do both hosts run the same overlayd version?)")]
    Protocol { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the control-plane task has stopped; restart the daemon")]
    Stopped,
    #[error(transparent)]
    Control(#[from] ControlError),
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn tls<E: std::fmt::Display>(e: E) -> TransportError {
    TransportError::Tls(e.to_string())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TransportError> {
    let mut r = RootCertStore::empty();
    r.add(ca.clone()).map_err(tls)?;
    Ok(Arc::new(r))
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Failure detection is SWIM's job, not QUIC's; the idle timeout only bounds how long a connection to
    // a vanished process is kept (SWIM traffic keeps live ones busy anyway).
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    Arc::new(t)
}

/// Server side: TLS 1.3, client certificates verified against the cluster CA. Unauthenticated clients
/// are let through the handshake only so they can use the join ALPN; the gossip ALPN closes them.
pub fn server_config(cred: &NodeCredential) -> Result<quinn::ServerConfig, TransportError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&cred.ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls)?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cred.chain.clone(), cred.key.clone_key())
        .map_err(tls)?;
    c.alpn_protocols = vec![ALPN_GOSSIP.to_vec(), ALPN_JOIN.to_vec(), ALPN_RELAY.to_vec()];
    c.max_early_data_size = 0; // no 0-RTT: control messages must not be replayable
    let mut s = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(c).map_err(tls)?));
    s.transport_config(transport_config());
    // Bound what unvalidated Initials can make quinn buffer before our accept loop decides (the guard
    // in `crate::exposure` does the per-source part).
    s.max_incoming(MAX_INCOMING)
        .incoming_buffer_size(16 * 1024)
        .incoming_buffer_size_total(4 * 1024 * 1024);
    Ok(s)
}

/// Connections quinn holds before our accept loop has looked at them.
const MAX_INCOMING: usize = 1024;

/// Client side between members: verify the server against the cluster CA, present our credential.
pub fn gossip_client_config(cred: &NodeCredential) -> Result<quinn::ClientConfig, TransportError> {
    member_client_config(cred, ALPN_GOSSIP)
}

fn member_client_config(cred: &NodeCredential, alpn: &[u8]) -> Result<quinn::ClientConfig, TransportError> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_root_certificates(roots(&cred.ca)?)
        .with_client_auth_cert(cred.chain.clone(), cred.key.clone_key())
        .map_err(tls)?;
    c.alpn_protocols = vec![alpn.to_vec()];
    c.enable_early_data = false;
    let mut q = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(c).map_err(tls)?));
    q.transport_config(transport_config());
    Ok(q)
}

/// A received, authenticated gossip message.
type Inbound = (PeerAddr, Vec<u8>);

/// Read every uni stream of an authenticated gossip connection into the pump.
async fn read_streams(conn: quinn::Connection, tx: mpsc::Sender<Inbound>) {
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
async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<Accept>) {
    while let Some(incoming) = endpoint.accept().await {
        if !incoming.remote_address_validated() {
            // Stateless: no TLS work and no state until the source proves it receives our packets.
            ctx.stats.count_retry();
            let _ = incoming.retry();
            continue;
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
struct Accept {
    pool: Arc<Pool>,
    join: Arc<JoinService>,
    guard: Arc<Guard>,
    stats: Arc<QuicStats>,
}

fn is_authenticated(conn: &quinn::Connection) -> bool {
    // rustls already verified any presented certificate against the CA; require that one was.
    conn.peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())
        .is_some_and(|c| !c.is_empty())
}

async fn handle_incoming(incoming: quinn::Incoming, permit: SourcePermit, ctx: Arc<Accept>) {
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
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
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
            if !ctx.pool.adopt(conn.remote_address(), conn.clone()) {
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

/// One QUIC connection per peer to send on, whoever opened it. A newly accepted authenticated connection from a
/// peer replaces the cached one: after the peer restarts, our old connection to its previous process
/// is dead (the new process cannot even reset it), and without this our acks would vanish until the
/// idle timeout and the restarted peer would suspect us. While our own dial to a peer is under way, a
/// connection the peer opened to us is used at once: both members of a pair often dial each other at
/// the same moment while a cluster forms, and a member's answers (its table, its Hello) must not wait
/// for its own handshake when the peer's is done. The dial still finishes in the background (dropping it
/// mid-handshake makes the peer answer its remaining packets with Retries) and stays open for the
/// peer's streams, kept in the peer's slot ([`LinkState::extra`], at most [`MAX_EXTRA`]) so that a
/// revocation closes it too.
struct Pool {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    peers: Mutex<HashMap<SocketAddr, Arc<Link>>>,
    inbound: mpsc::Sender<Inbound>,
    /// Node ids of the revocation list (checked against the peer certificate of every connection).
    revoked: RwLock<HashSet<NodeId>>,
    /// Dial counters (`quic.dials` …).
    stats: Arc<QuicStats>,
}

/// The node id in the (CA-verified) certificate the peer presented.
fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    auth::node_id_from_cert(certs.first()?)
}

/// Our connection to one peer and the senders waiting for one.
#[derive(Default)]
struct Link {
    state: Mutex<LinkState>,
    /// Woken when a dial ends or a connection from the peer is adopted.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct LinkState {
    /// The connection our messages to the peer go on.
    conn: Option<quinn::Connection>,
    /// The peer's other open gossip connections (the late dial of a pair that dialled each other at once):
    /// not sent on, but the peer may send on them, so they stay reachable here for [`Pool::close_revoked`].
    extra: Vec<quinn::Connection>,
    /// After a failed dial, drop messages to this peer until then instead of redialling per message.
    backoff_until: Option<Instant>,
    /// One dial at a time; concurrent sends wait for it (or for the peer's own connection).
    dialling: bool,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
    fn rtts(&self) -> Vec<Duration> {
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
    fn is_revoked(&self, conn: &quinn::Connection) -> bool {
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
    fn close_revoked(&self, node: NodeId) {
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

    fn link(&self, to: SocketAddr) -> Arc<Link> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(peers.entry(to).or_default())
    }

    /// Adopt an accepted connection from `from` for our own sends too (also those waiting for a dial).
    /// A revoked peer's connection is closed instead (`false`: do not read it).
    fn adopt(&self, from: SocketAddr, conn: quinn::Connection) -> bool {
        let link = self.link(from);
        {
            let mut l = link.lock();
            if self.is_revoked(&conn) {
                conn.close(4u32.into(), b"revoked");
                return false;
            }
            if let Some(old) = l.conn.replace(conn) {
                if old.close_reason().is_none() {
                    l.shelve(old);
                }
            }
            l.backoff_until = None;
        }
        link.changed.notify_waiters();
        true
    }

    /// An open connection to `to`: the cached one, else whichever comes first of our dial and the
    /// peer's own connection to us. `None` while the peer is in its dial back-off.
    async fn connection(self: &Arc<Self>, to: SocketAddr) -> Option<quinn::Connection> {
        let link = self.link(to);
        loop {
            // Registered before the state is read, so a change in between still wakes us.
            let changed = link.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut l = link.lock();
                if let Some(c) = usable(&l.conn) {
                    return Some(c.clone());
                }
                if l.backoff_until.is_some_and(|t| Instant::now() < t) {
                    self.stats.count_backoff_drop();
                    return None;
                }
                if !l.dialling {
                    l.dialling = true;
                    tokio::spawn(Arc::clone(self).dial(to, Arc::clone(&link)));
                }
            }
            changed.await;
        }
    }

    /// Dial `to` and record the outcome in its link. A connection the peer opened meanwhile stays the
    /// one we send on; ours stays open for the peer's streams.
    async fn dial(self: Arc<Self>, to: SocketAddr, link: Arc<Link>) {
        let started = Instant::now();
        let dial = async {
            let connecting = self
                .endpoint
                .connect_with(self.client.clone(), to, CLUSTER_SERVER_NAME)
                .ok()?;
            tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.ok()?.ok()
        };
        let dialled = dial.await;
        // A revoked peer's connection is closed at once below: a failed dial, like one refused.
        let ok = dialled.as_ref().filter(|c| !self.is_revoked(c));
        self.stats.count_dial(ok, started.elapsed());
        {
            let mut l = link.lock();
            l.dialling = false;
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

    fn send(self: &Arc<Self>, to: SocketAddr, bytes: Vec<u8>) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let Some(conn) = pool.connection(to).await else {
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

/// One local FDB entry: (VNI, MAC, IPs bound to it).
pub type LocalEntry = (Vni, MacAddr, Vec<IpAddr>);

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// Requests from the daemon to the control-plane task.
#[derive(Debug)]
enum Command {
    SetLocal(Vec<LocalEntry>, Reply<()>),
    CreateNetwork(NetworkDef, Reply<NetworkDef>),
    RemoveNetwork(String, Reply<()>),
    RequestBlock(String, Reply<BlockOutcome>),
    Installed(Vni, oneshot::Sender<Vec<(MacAddr, IpAddr, Vec<IpAddr>)>>),
    Networks(oneshot::Sender<Vec<NetworkInfo>>),
    Join(PeerAddr),
    Leave(oneshot::Sender<()>),
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Revoke(NodeId, oneshot::Sender<Result<RevokeOutcome, String>>),
    Stats(oneshot::Sender<ControlStats>),
    /// QUIC's round-trip estimate of every open gossip connection.
    Rtts(oneshot::Sender<Vec<Duration>>),
}

/// Parameters of [`start`].
#[derive(Debug)]
pub struct GossipOptions {
    pub bind: SocketAddr,
    /// Address other members reach us at (defaults to `bind` if it is not unspecified).
    pub advertise: SocketAddr,
    pub vtep: IpAddr,
    /// One per daemon start; must grow across restarts (e.g. milliseconds since the epoch).
    pub generation: u64,
    pub credential: NodeCredential,
    /// Present if this node may admit joiners (it holds the CA key and the join secret). Shared with the
    /// admin endpoint, which serves the token and its rotation.
    pub admission: Option<Arc<Admission>>,
    /// Counters of the QUIC port (shared with `overlayctl stats`).
    pub quic: Arc<QuicStats>,
    /// Caps on unauthenticated connections.
    pub limits: Limits,
    pub config: ControlConfig,
    pub seed: u64,
    /// Where to remember members' addresses: a restart re-joins through them with no --peer/--token.
    pub state: Option<StateDir>,
}

/// Handle to the running control plane.
#[derive(Debug)]
pub struct GossipHandle {
    client: GossipClient,
    /// What the daemon must act on, in order: every [`Output`] except `Send` and `ScheduleTimer`.
    pub events: mpsc::UnboundedReceiver<Output>,
    local_addr: SocketAddr,
    endpoint: quinn::Endpoint,
}

/// The command side of a [`GossipHandle`]: cheap to clone, so the admin API, the Docker driver and the
/// daemon's glue can all ask the control plane. Every command method of the handle lives here (the handle
/// derefs to it); only `leave` and `abort`, which end the control plane, need the handle itself.
#[derive(Debug, Clone)]
pub struct GossipClient {
    cmd: mpsc::Sender<Command>,
}

impl std::ops::Deref for GossipHandle {
    type Target = GossipClient;
    fn deref(&self) -> &GossipClient {
        &self.client
    }
}

impl GossipHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// A clonable client for the command methods.
    pub fn client(&self) -> GossipClient {
        self.client.clone()
    }
    /// Stop abruptly without announcing anything (what a crash looks like to the others; for tests and
    /// fatal errors). The pump stops once this handle is gone.
    pub fn abort(self) {
        self.endpoint.close(0u32.into(), b"abort");
    }

    /// SIGTERM path: announce the leave, give the packets a moment to leave, close the endpoint.
    pub async fn leave(self) -> Result<(), TransportError> {
        let (tx, rx) = oneshot::channel();
        self.client
            .cmd
            .send(Command::Leave(tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.endpoint.close(0u32.into(), b"leaving");
        Ok(())
    }
}

impl GossipClient {
    /// Send a command and wait for its answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// The full set of local (VNI, MAC, IPs) behind this node's bridges ([`ControlNode::set_local`]).
    pub async fn set_local(&self, entries: Vec<LocalEntry>) -> Result<(), TransportError> {
        Ok(self.ask(|tx| Command::SetLocal(entries, tx)).await??)
    }

    /// `overlayctl network create` ([`ControlNode::create_network`]).
    pub async fn create_network(&self, def: NetworkDef) -> Result<NetworkDef, TransportError> {
        Ok(self.ask(|tx| Command::CreateNetwork(def, tx)).await??)
    }

    /// `overlayctl network rm` ([`ControlNode::remove_network`]).
    pub async fn remove_network(&self, name: &str) -> Result<(), TransportError> {
        let name = name.to_string();
        Ok(self.ask(|tx| Command::RemoveNetwork(name, tx)).await??)
    }

    /// Ask for one more address block of `network` ([`ControlNode::request_block`]).
    pub async fn request_block(&self, network: &str) -> Result<BlockOutcome, TransportError> {
        let network = network.to_string();
        Ok(self.ask(|tx| Command::RequestBlock(network, tx)).await??)
    }

    /// Current control entries of `vni`: (MAC, VTEP, IPs) ([`ControlNode::installed`]).
    pub async fn installed(&self, vni: Vni) -> Result<Vec<(MacAddr, IpAddr, Vec<IpAddr>)>, TransportError> {
        self.ask(|tx| Command::Installed(vni, tx)).await
    }

    /// Current network definitions with this node's blocks ([`ControlNode::networks`]).
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, TransportError> {
        self.ask(Command::Networks).await
    }
    pub async fn join(&self, peer: PeerAddr) -> Result<(), TransportError> {
        self.cmd
            .send(Command::Join(peer))
            .await
            .map_err(|_| TransportError::Stopped)
    }
    /// `overlayctl revoke`: revoke `node` (signed here on an admitter, forwarded to one elsewhere).
    /// The outer error means the control plane is gone; the inner one says why the revocation failed.
    pub async fn revoke(&self, node: NodeId) -> Result<Result<RevokeOutcome, String>, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Revoke(node, tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// QUIC's smoothed round-trip estimate of each open gossip connection (for the RTT histogram).
    pub async fn rtts(&self) -> Result<Vec<Duration>, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Rtts(tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    /// The control plane's counters (refused identities, bad signatures, refused seqs, ...).
    pub async fn stats(&self) -> Result<ControlStats, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Stats(tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }

    pub async fn members(&self) -> Result<Vec<MemberInfo>, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Members(tx))
            .await
            .map_err(|_| TransportError::Stopped)?;
        rx.await.map_err(|_| TransportError::Stopped)
    }
}

/// Bind the gossip endpoint and spawn the pump. Must be called inside a tokio runtime.
pub fn start(opts: GossipOptions) -> Result<GossipHandle, TransportError> {
    let server = server_config(&opts.credential)?;
    let client = gossip_client_config(&opts.credential)?;
    let bind_err = |source| TransportError::Bind {
        addr: opts.bind,
        source,
    };
    let socket = bind_gossip_socket(opts.bind).map_err(bind_err)?;
    let runtime = quinn::default_runtime().ok_or_else(|| {
        bind_err(std::io::Error::other(
            "no tokio runtime (start() must run inside one)",
        ))
    })?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)
        .map_err(bind_err)?;
    let local_addr = endpoint.local_addr().map_err(|source| TransportError::Bind {
        addr: opts.bind,
        source,
    })?;
    let advertise = if opts.advertise.port() == 0 {
        SocketAddr::new(opts.advertise.ip(), local_addr.port())
    } else {
        opts.advertise
    };
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(4096);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let cred = &opts.credential;
    let ca_key = cred.ca_public_key()?;
    let signer = Arc::new(cred.signer()?);
    // Only an admitter (attested as one, CA key in its state dir) signs revocations; every other
    // member forwards `overlayctl revoke` to an admitter.
    let ca_signer = match &opts.state {
        Some(state) if cred.attestation.admitter => state.ca_signer()?.map(Arc::new),
        _ => None,
    };
    let revoked = match &opts.state {
        Some(s) => s.load_revocations(&ca_key)?,
        None => RevocationList::default(),
    };
    let admitters = match &opts.state {
        Some(s) => s.load_admitters()?,
        None => Vec::new(),
    };
    let peers = match &opts.state {
        Some(s) => s.load_peers()?,
        None => Vec::new(),
    };
    let pool = Arc::new(Pool {
        endpoint: endpoint.clone(),
        client,
        peers: Mutex::new(HashMap::new()),
        inbound: in_tx,
        revoked: RwLock::new(revoked.iter().map(|r| r.node).collect()),
        stats: Arc::clone(&opts.quic),
    });
    let directory = Arc::new(Directory {
        me: advertise,
        admitters: Mutex::new(admitters),
        members: Mutex::new(Vec::new()),
        state: opts.state.clone(),
    });
    let join = Arc::new(JoinService {
        admission: opts.admission,
        directory: Arc::clone(&directory),
        endpoint: endpoint.clone(),
        relay_client: member_client_config(&opts.credential, ALPN_RELAY)?,
        stats: Arc::clone(&opts.quic),
        relay_slots: Arc::new(tokio::sync::Semaphore::new(crate::admission::RELAY_CONCURRENCY)),
        relay_next: Mutex::new(Instant::now()),
        serve_timeout: opts.limits.join_timeout,
    });
    let accept = Arc::new(Accept {
        pool: Arc::clone(&pool),
        join,
        guard: Guard::new(opts.limits),
        stats: opts.quic,
    });
    tokio::spawn(accept_loop(endpoint.clone(), accept));
    let identity = NodeIdentity::signed(
        advertise,
        opts.vtep,
        opts.generation,
        cred.attestation.clone(),
        &signer,
    )
    .map_err(AuthError::from)?;
    let trust = Trust {
        ca_key,
        signer,
        ca_signer,
        revoked,
    };
    let now = Instant::now();
    let mut node = ControlNode::new(now, identity, trust, opts.config, opts.seed);
    for peer in peers {
        if peer != advertise {
            let _ = node.join(now, peer);
        }
    }
    tokio::spawn(pump(node, pool, in_rx, cmd_rx, ev_tx, opts.state, directory));
    Ok(GossipHandle {
        client: GossipClient { cmd: cmd_tx },
        events: ev_rx,
        local_addr,
        endpoint,
    })
}

/// Receive buffer asked for on the gossip socket. While a cluster forms, every member handshakes with every
/// other at once (Initials padded to 1200 bytes, certificate flights) and the daemon's two runtime threads
/// share the CPU with that TLS work: with the kernel's default (`net.core.rmem_default`, 208 KiB, about 90
/// such datagrams) the socket overflowed on a fifth of the hosts of a 32-node test cluster, and every lost
/// handshake packet costs QUIC a retransmission timeout. The plain SO_RCVBUF is silently capped at
/// `net.core.rmem_max` (208 KiB on a stock kernel), so the daemon uses SO_RCVBUFFORCE (CAP_NET_ADMIN, which
/// it keeps); the kernel doubles the size for its bookkeeping. Memory is only used while datagrams wait.
pub(crate) const GOSSIP_RCVBUF: usize = 4 << 20;

/// The gossip endpoint's UDP socket, bound to `addr` with a [`GOSSIP_RCVBUF`] receive buffer: forced past
/// `net.core.rmem_max` with CAP_NET_ADMIN, else the plain option (which the kernel caps). A smaller buffer
/// is not an error, but it is read back and logged once as a warning.
pub(crate) fn bind_gossip_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let granted = force_recv_buffer(&s, GOSSIP_RCVBUF);
    if granted < GOSSIP_RCVBUF {
        tracing::warn!(
            granted,
            wanted = GOSSIP_RCVBUF,
            "gossip socket receive buffer is smaller than wanted (no CAP_NET_ADMIN, so capped by \
             net.core.rmem_max): handshakes may be dropped while a large cluster forms; raise \
             net.core.rmem_max or keep CAP_NET_ADMIN"
        );
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Ask for a `size`-byte receive buffer on `s` (SO_RCVBUFFORCE, falling back to SO_RCVBUF without
/// CAP_NET_ADMIN, as the data plane's sockets do); returns the size the kernel granted.
fn force_recv_buffer(s: &socket2::Socket, size: usize) -> usize {
    use std::os::fd::AsRawFd;
    let want = size.min(i32::MAX as usize / 2) as libc::c_int;
    let forced =
        dataplane::io::udp::setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want);
    if forced.is_err() {
        if let Err(e) = s.set_recv_buffer_size(want as usize) {
            tracing::debug!(error = %e, "cannot enlarge the gossip socket's receive buffer");
        }
    }
    // The kernel reports double the size it granted.
    s.recv_buffer_size().map(|b| b / 2).unwrap_or(0)
}

/// Persist the active members' addresses when the set changes (off the pump thread: it fsyncs).
fn remember_peers(state: &StateDir, members: &[MemberInfo], me: SocketAddr, saved: &mut Vec<SocketAddr>) {
    let mut peers: Vec<SocketAddr> = members
        .iter()
        .filter(|m| m.addr != me && matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .map(|m| m.addr)
        .collect();
    peers.sort_unstable();
    peers.truncate(MAX_REMEMBERED_PEERS);
    if peers.is_empty() || peers == *saved {
        return;
    }
    saved.clone_from(&peers);
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = state.save_peers(&peers) {
            tracing::warn!(error = %e, "cannot remember cluster members for restarts");
        }
    });
}

/// Enough addresses that a restart finds a live member even after much churn.
const MAX_REMEMBERED_PEERS: usize = 64;

async fn pump(
    mut node: ControlNode,
    pool: Arc<Pool>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Output>,
    state: Option<StateDir>,
    directory: Arc<Directory>,
) {
    let mut saved_peers: Vec<SocketAddr> = Vec::new();
    let mut timers: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut timer_of: HashMap<u64, Timer> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send { to, bytes } => pool.send(to, bytes),
                Output::ScheduleTimer { at, timer } => {
                    timers.push(Reverse((at, next_id)));
                    timer_of.insert(next_id, timer);
                    next_id += 1;
                }
                Output::Revoked { node: id } => {
                    let _ = events.send(Output::Revoked { node: id });
                    if let Some(state) = &state {
                        let list = node.revocations().clone();
                        let state = state.clone();
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = state.save_revocations(&list) {
                                tracing::error!(error = %e, "cannot persist the revocation list");
                            }
                        });
                    }
                    // Refuse new connections at once; close existing ones off the pump.
                    pool.revoked.write().unwrap_or_else(|e| e.into_inner()).insert(id);
                    pool.close_revoked(id);
                }
                Output::MembersChanged(members) => {
                    if let Some(state) = &state {
                        remember_peers(state, &members, node.identity().addr, &mut saved_peers);
                    }
                    // Relay candidates for joiners: the alive members, those attested as admitters
                    // first (an admitter answers, the others decline).
                    let admitters = node.admitter_addrs();
                    let mut alive: Vec<SocketAddr> = members
                        .iter()
                        .filter(|m| m.state == MemberState::Alive)
                        .map(|m| m.addr)
                        .collect();
                    alive.sort_by_key(|a| !admitters.contains(a));
                    *directory.members.lock().unwrap_or_else(|e| e.into_inner()) = alive;
                    let _ = events.send(Output::MembersChanged(members));
                }
                other => {
                    let _ = events.send(other);
                }
            }
        }
        let next = timers.peek().map(|Reverse((at, _))| *at);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbound.recv() => {
                let Some((from, bytes)) = msg else { return };
                if let Err(e) = node.handle_message(Instant::now(), from, &bytes) {
                    tracing::debug!(%from, error = %e, "dropped gossip message");
                }
            }
            cmd = cmds.recv() => {
                let now = Instant::now();
                let r = match cmd {
                    None => return,
                    Some(Command::SetLocal(e, tx)) => { let _ = tx.send(node.set_local(now, &e)); Ok(()) }
                    Some(Command::CreateNetwork(d, tx)) => { let _ = tx.send(node.create_network(now, d)); Ok(()) }
                    Some(Command::RemoveNetwork(n, tx)) => { let _ = tx.send(node.remove_network(now, &n)); Ok(()) }
                    Some(Command::RequestBlock(n, tx)) => { let _ = tx.send(node.request_block(now, &n)); Ok(()) }
                    Some(Command::Installed(v, tx)) => { let _ = tx.send(node.installed(v)); Ok(()) }
                    Some(Command::Networks(tx)) => { let _ = tx.send(node.networks()); Ok(()) }
                    Some(Command::Join(p)) => node.join(now, p),
                    Some(Command::Members(tx)) => { let _ = tx.send(node.members()); Ok(()) }
                    Some(Command::Rtts(tx)) => { let _ = tx.send(pool.rtts()); Ok(()) }
                    Some(Command::Stats(tx)) => { let _ = tx.send(node.stats()); Ok(()) }
                    Some(Command::Revoke(id, tx)) => {
                        let _ = tx.send(node.revoke(now, id).map_err(|e| e.to_string()));
                        Ok(())
                    }
                    Some(Command::Leave(tx)) => {
                        let r = node.leave(now);
                        while let Some(out) = node.poll_output() {
                            if let Output::Send { to, bytes } = out { pool.send(to, bytes) }
                        }
                        let _ = tx.send(());
                        r
                    }
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "control command failed");
                }
            }
            () = sleep => {
                let now = Instant::now();
                while let Some(Reverse((at, id))) = timers.peek().copied() {
                    if at > now { break; }
                    timers.pop();
                    if let Some(t) = timer_of.remove(&id) {
                        if let Err(e) = node.handle_timer(now, t) {
                            tracing::debug!(error = %e, "timer handling failed");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let socket = bind_gossip_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config(cred).unwrap()),
            socket,
            quinn::default_runtime().unwrap(),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let pool = Arc::new(Pool {
            endpoint,
            client: gossip_client_config(cred).unwrap(),
            peers: Mutex::default(),
            inbound: tx,
            revoked: RwLock::default(),
            stats: Arc::default(),
        });
        (pool, rx)
    }

    /// The peer dials us while our own dial to it is still under way: the senders waiting for our dial
    /// get the peer's connection at once, and our dial, finishing later, does not replace it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_senders_take_the_peers_connection_and_a_late_dial_keeps_it() {
        let cred = credential("either");
        let (ours, mut in_ours) = pool(&cred);
        let (peer, _in_peer) = pool(&cred);
        let our_addr = ours.endpoint.local_addr().unwrap();
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
        let accept = tokio::spawn({
            let ours = Arc::clone(&ours);
            async move {
                ours.endpoint
                    .accept()
                    .await
                    .unwrap()
                    .accept()
                    .unwrap()
                    .await
                    .unwrap()
            }
        });
        let _peers_side = peer
            .endpoint
            .connect_with(peer.client.clone(), our_addr, CLUSTER_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let accepted = accept.await.unwrap();
        assert_eq!(accepted.remote_address(), peer_addr);
        assert!(ours.adopt(peer_addr, accepted.clone()));
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting sender was not woken by the adopted connection")
            .unwrap()
            .expect("a connection");
        assert_eq!(got.stable_id(), accepted.stable_id());

        // Our own dial now completes: it is counted, kept open, and the adopted connection stays.
        let peer_accepts = tokio::spawn({
            let peer = Arc::clone(&peer);
            async move {
                peer.endpoint
                    .accept()
                    .await
                    .unwrap()
                    .accept()
                    .unwrap()
                    .await
                    .unwrap()
            }
        });
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

    /// `peer` dials `ours`; `ours` accepts and adopts the connection as the accept loop does. Returns
    /// (our end, the peer's end).
    async fn peer_dials_us(ours: &Arc<Pool>, peer: &Arc<Pool>) -> (quinn::Connection, quinn::Connection) {
        let our_addr = ours.endpoint.local_addr().unwrap();
        let accept = tokio::spawn({
            let ours = Arc::clone(ours);
            async move {
                let c = ours
                    .endpoint
                    .accept()
                    .await
                    .unwrap()
                    .accept()
                    .unwrap()
                    .await
                    .unwrap();
                assert!(ours.adopt(c.remote_address(), c.clone()), "adopted");
                c
            }
        });
        let theirs = peer
            .endpoint
            .connect_with(peer.client.clone(), our_addr, CLUSTER_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        (accept.await.unwrap(), theirs)
    }

    /// `ours` dials `peer` through the pool (as a sender would); returns the peer's end.
    async fn we_dial_peer(ours: &Arc<Pool>, peer: &Arc<Pool>) -> quinn::Connection {
        let peer_addr = peer.endpoint.local_addr().unwrap();
        let peer_accepts = tokio::spawn({
            let peer = Arc::clone(peer);
            async move {
                peer.endpoint
                    .accept()
                    .await
                    .unwrap()
                    .accept()
                    .unwrap()
                    .await
                    .unwrap()
            }
        });
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
        let our_addr = ours.endpoint.local_addr().unwrap();
        let accept = tokio::spawn({
            let ours = Arc::clone(&ours);
            async move {
                ours.endpoint
                    .accept()
                    .await
                    .unwrap()
                    .accept()
                    .unwrap()
                    .await
                    .unwrap()
            }
        });
        let theirs = peer
            .endpoint
            .connect_with(peer.client.clone(), our_addr, CLUSTER_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let accepted = accept.await.unwrap();
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
}
