//! overlayd control plane: membership (SWIM via foca), FDB distribution, authentication and the QUIC
//! transport that carries them. The state machine is sans-IO: it is fed messages and `now`.
//!
//! - [`node::ControlNode`]: the state machine the daemon drives. Inputs: `handle_message`, `handle_timer`,
//!   `set_local`, `join`, `leave`, `revoke`, `create_network`, `remove_network`, `request_block`.
//!   Outputs: polled with [`node::ControlNode::poll_output`] as [`Output`].
//! - [`catalog`]: cluster-wide network definitions ([`NetworkDef`]), signed by their author, tombstones.
//! - [`ipam`]: CA-signed address-block grants and releases.
//! - [`identity`]: the signed foca identity (node id + gossip addr + VTEP + generation + CA attestation),
//!   its verifier and the verifying foca codec.
//! - [`membership`]: RNG, runtime adapter and the custom-broadcast handler (leaves, revocations,
//!   network records, block grants).
//! - [`revocation`]: CA-signed revocations and the revocation list.
//! - [`sync`]: per-owner (VNI, MAC) tables with IP bindings, cross-owner resolution, per-VNI flood sets,
//!   anti-entropy digests. Pure data, no foca.
//! - [`messages`]: the versioned wire envelope (postcard); decoding never panics.
//! - [`attest`]: compact CA-signed attestations and node signatures that make gossip claims verifiable.
//! - [`auth`]: cluster CA, node credentials, join tokens.
//! - [`join`]: admission (CA pinned by fingerprint, signing request proven by an HMAC under the join
//!   secret, key generated locally; members without the CA key relay to an admitter).
//! - [`admission`]: the member's side of a join: admit (admitters) or relay to an admitter.
//! - [`exposure`]: caps and address validation on the QUIC port, and its counters.
//! - [`transport`]: the QUIC (quinn + rustls, mTLS, pinned ALPN) shell that pumps a `ControlNode`.
//! - `sim` (feature `testing`): N nodes in memory with a virtual clock, loss and partitions.
//!
//! Nothing in this crate touches the data plane directly: FDB changes leave as [`Output`] values.
//!
//! # Wiring it into the daemon
//! ```text
//! let state = auth::StateDir::new(state_dir);                      // default auth::DEFAULT_STATE_DIR
//! let cred = if init_cluster { state.init_cluster(vtep)? }         // overlayd --init-cluster
//!     else if let (Some(peer), Some(tok)) = (peer, token) {        // overlayd --peer ADDR --token TOKEN
//!         transport::join_cluster(peer, &tok.parse()?, &state, vtep).await? }
//!     else { state.load_credential()? };                           // restart: no token needed
//! let mut h = transport::start(transport::GossipOptions {
//!     bind, advertise, vtep, generation: state.next_generation()?, credential: cred,
//!     admission: transport::Admission::from_state(&state)?.map(Arc::new), // admitters only
//!     quic: Arc::default(), limits: exposure::Limits::default(),
//!     config: ControlConfig::default(), seed, state: Some(state.clone()) })?;
//! if let Some(peer) = peer { h.join(peer).await?; }                // restarts re-join via state's `peers`
//! // Local entries are pushed, not scanned: on every change of the local (VNI, MAC, IPs) set:
//! //   h.set_local(vec![(vni, mac, ips), ...]).await?   // full set; ≤ 8 IPs per MAC (else TooManyIps)
//! // h.events yields control::Output (never Send/ScheduleTimer), in order:
//! //   FdbInstall{vni,mac,vtep,ips} → network vni's FDB: mac behind vtep (origin Control) + ARP/ND bindings
//! //   FdbRemove{vni,mac}           → remove that entry and its bindings
//! //   FloodSet{vni,vteps}          → the network's BUM flood set (complete list; empty = none)
//! //   NetworkUpsert(def)           → create/update bridge ovbr<VNI> + TAP ovl<VNI> (idempotent)
//! //   NetworkRemoved{name,vni}     → tear them down
//! //   BlockGranted{network,block} / BlockReleased{network,block} → this host's IPAM blocks
//! //   MembersChanged(rows)         → cache for `overlayctl peers --json` (serde_json of rows)
//! //   Revoked{node}                → (already enforced by the transport; informational)
//! // A network that appears locally after its entries arrived: h.installed(vni).await → (mac, vtep, ips).
//! // `overlayctl network create/rm`: h.create_network(NetworkDef::new(..)?).await / h.remove_network(name)
//! // `network ls`: h.networks().await → [NetworkInfo{def, blocks}]
//! // attach without --ip and no free address: h.request_block(name).await → Granted(block) on an
//! //   admitter, Requested(admitter) elsewhere (BlockGranted follows), Pending (no admitter: 503; the
//! //   request is retried every anti-entropy tick)
//! // SIGTERM → h.leave().await;   `overlayctl token [--rotate]` → admission.token() / .rotate()
//! ```

pub mod admission;
pub mod attest;
pub mod auth;
pub mod catalog;
pub mod exposure;
pub mod identity;
pub mod ipam;
pub mod join;
pub mod membership;
pub mod messages;
pub mod node;
pub mod revocation;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod sync;
pub mod transport;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub use catalog::{NetworkDef, NetworkError};
pub use dataplane::wire::{MacAddr, Vni};
pub use ipnet::IpNet;
pub use membership::{NodeId, NodeIdentity};
pub use messages::DecodeError;
pub use node::{
    BlockOutcome, ControlConfig, ControlNode, ControlStats, MemberInfo, MemberState, NetworkInfo,
    RevokeOutcome, Trust,
};

/// Where a peer's gossip endpoint listens (UDP, `--gossip-port`, default [`DEFAULT_GOSSIP_PORT`]).
pub type PeerAddr = SocketAddr;

/// Default UDP port of the gossip/QUIC endpoint.
pub const DEFAULT_GOSSIP_PORT: u16 = 7948;

/// An opaque timer the state machine asked for. Hand it back through
/// [`ControlNode::handle_timer`] at (or after) the requested instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer(pub(crate) TimerKind);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerKind {
    Swim(foca::Timer<NodeIdentity>),
    AntiEntropy,
    /// The gossip budget has refilled enough for the next waiting sync message.
    Pace,
    /// The advert batch window ended.
    FlushAdverts,
    /// A direct exchange put off while a member relayed is due (`node/relay.rs`).
    Meet,
}

/// What the caller must do after feeding the state machine an input. The transport handles `Send` and
/// `ScheduleTimer` itself and hands every other variant, unchanged and in order, to the daemon
/// (`GossipHandle::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` to the peer's gossip endpoint. Best effort: loss is tolerated.
    Send { to: PeerAddr, bytes: Vec<u8> },
    /// Call [`ControlNode::handle_timer`] with `timer` once `now >= at`.
    ScheduleTimer { at: Instant, timer: Timer },
    /// Install (or overwrite) an FDB entry of origin "control" in network `vni`: `mac` lives behind
    /// `vtep` and answers for `ips` (≤ 8; ARP/ND suppression bindings; replaces any earlier list).
    /// Never emitted for our own entries.
    FdbInstall {
        vni: Vni,
        mac: MacAddr,
        vtep: IpAddr,
        ips: Vec<IpAddr>,
    },
    /// Remove the control-plane FDB entry (and its IP bindings) for `mac` in `vni`.
    FdbRemove { vni: Vni, mac: MacAddr },
    /// The complete BUM flood set of `vni` changed: the VTEPs of the alive/suspect members (not us)
    /// that advertise at least one MAC on it, sorted. An empty list ends the set.
    FloodSet { vni: Vni, vteps: Vec<IpAddr> },
    /// A network was defined or its definition changed (create its bridge/TAP; idempotent).
    NetworkUpsert(NetworkDef),
    /// A network was removed (its tombstone won): tear down its devices.
    NetworkRemoved { name: String, vni: Vni },
    /// This node now holds IPAM `block` of `network` (CA-signed grant).
    BlockGranted { network: String, block: IpNet },
    /// This node no longer holds `block` (released by an admitter, lost to a concurrent grant, or the
    /// network was removed / redefined without it).
    BlockReleased { network: String, block: IpNet },
    /// Membership or member states changed: every member known, this node first (what
    /// `overlayctl peers --json` shows). Filled in by [`ControlNode::poll_output`] when drained.
    MembersChanged(Vec<MemberInfo>),
    /// A CA-signed revocation of `node` was accepted: close and refuse its connections, and persist
    /// [`ControlNode::revocations`].
    Revoked { node: NodeId },
}

/// Why an input was rejected. Rejected inputs change no state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("dropped gossip packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("SWIM layer rejected the input: {0} (check that all members run the same overlayd version and timings)")]
    Swim(String),
    #[error("cannot encode control message: {0} (this is a bug; please report it)")]
    Encode(String),
    #[error("node has left the cluster (or was revoked); restart the daemon to rejoin")]
    Left,
    #[error("a node cannot revoke itself; run `overlayctl revoke` on another member")]
    RevokeSelf,
    #[error("no admitter is reachable to sign the revocation (only admitters hold the CA key); retry when one is up, or run `overlayctl revoke` on an admitter")]
    NoAdmitter,
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("at most {max} IP addresses may be bound to one MAC ({mac} on VNI {vni} has {got}); bind fewer")]
    TooManyIps {
        vni: Vni,
        mac: MacAddr,
        got: usize,
        max: usize,
    },
    #[error("this node already holds (or asked for) {0} blocks of the network; release addresses or use another network")]
    TooManyBlocks(u32),
}
