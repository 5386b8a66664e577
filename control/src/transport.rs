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
//! address is validated (it answered a Retry, or presents a one-use token from an earlier connection,
//! [`tokens`]), per-source and total caps, a handshake timeout.
//!
//! [`start`] spawns the pump: it feeds received messages, commands and due timers to the node and acts
//! on its outputs; every [`Output`] other than `Send`/`ScheduleTimer` (FDB, flood sets, networks,
//! blocks, membership, revocations) reaches the daemon unchanged through [`GossipHandle::events`].
//! Revoked nodes: a connection whose peer certificate names a revoked node id is closed right after the
//! handshake (both directions), and existing connections to a node are closed when its revocation arrives.
//! Must never: hand unauthenticated bytes (or a revoked node's bytes) to the state machine, or block the
//! pump on a slow peer.
//!
//! Submodules: `accept` (incoming connections), `opening` (which member of a pair dials, and when),
//! `persist` (background rewrites of state-dir records),
//! `pool` (per-peer gossip connections), `pump`, `socket` (the gossip UDP socket), `tokens` (address-
//! validation tokens: a source that proved its address skips the Retry next time).

use std::collections::HashMap;
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
use crate::auth::{AuthError, NodeCredential, StateDir};
use crate::exposure::{Guard, Limits, QuicStats};
use crate::membership::{NodeId, NodeIdentity};
use crate::node::{
    BlockOutcome, ControlConfig, ControlNode, ControlStats, MemberInfo, NetworkInfo, RevokeOutcome, Trust,
};
use crate::revocation::RevocationList;
use crate::{ControlError, MacAddr, NetworkDef, Output, PeerAddr, Vni};

mod accept;
mod opening;
pub(crate) use opening::YOUNG_DIAL;
pub(crate) mod persist;
mod pool;
mod pump;
mod socket;
pub(crate) mod tokens;

use accept::{accept_loop, Accept};
use pool::Pool;
use pump::pump;
use socket::bind_gossip_socket;

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
    // A client that proved its address gets a one-use token for its next connection (no Retry then).
    s.validation_token_config(tokens::server_config());
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
        me: advertise,
        waits: opening::Waits::default(),
        opening: opening::Opening::default(),
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
        admitters_file: opts.state.clone().map(|s| {
            persist::Persist::spawn(s, "the admitters", |s, v: &Vec<SocketAddr>| s.save_admitters(v))
        }),
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
        refused_retry: YOUNG_DIAL,
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

#[cfg(test)]
mod tests;
