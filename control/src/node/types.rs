//! The values a [`ControlNode`](super::ControlNode) reports: member rows and states (`overlayctl
//! peers`), counters (`overlayctl stats`) and what a revoke did.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::NodeId;

/// A member's state as exported by `overlayctl peers --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// One row of `overlayctl peers --json`: {"id","addr","state","generation"} (+ vtep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub id: String,
    pub addr: SocketAddr,
    pub vtep: IpAddr,
    pub state: MemberState,
    pub generation: u64,
    /// Bumped each time this run of the node was declared down and rejoined (a false death shows here).
    pub renewal: u32,
}

/// Per-reason counters (exported by `overlayctl stats`); counted, not logged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ControlStats {
    pub messages_in: u64,
    /// Envelope/body that did not decode (wrong version, garbage).
    pub decode_errors: u64,
    /// Packets foca refused (malformed SWIM, from ourselves, too big, ...).
    pub swim_errors: u64,
    /// Well-formed messages refused by policy (e.g. a leave announced on someone else's behalf).
    pub rejected: u64,
    /// Claims (adverts, dump entries, leaves, revocations, revoke requests) whose signature did not verify.
    pub bad_signatures: u64,
    /// FDB entries refused because their seq or mobility jumped more than `sync::MAX_JUMP`.
    pub seq_refused: u64,
    /// Identities refused by the verifier (forged, unattested, revoked) and full verifications done.
    pub identities_refused: u64,
    pub identity_verifications: u64,
    /// Revocations known (CA-signed).
    pub revoked: u64,
    pub anti_entropy_rounds: u64,
    pub fdb_installs: u64,
    pub fdb_removes: u64,
    /// Times this node learnt it had been declared down and rejoined with a renewed identity.
    pub rejoins: u64,
    /// SWIM Announces sent to held members' addresses while foca was disconnected (after a renewal,
    /// or with every member down): how a node that renewed gets its new identity known.
    pub reannounces: u64,
    /// Suspicion timeouts that did not declare the member down because it was heard from directly
    /// within the last `suspect_to_down_after` (see
    /// [`ControlNode::handle_timer`](super::ControlNode::handle_timer)).
    pub suspicions_deferred: u64,
    /// Suspect-to-down timers dropped because the suspicion had been refuted meanwhile.
    pub stale_down_timers: u64,
    /// Of those, suspicions of a member this node had not heard from before probing it (the probe
    /// waited for a new connection): they do not raise local health.
    pub unmet_suspicions: u64,
    /// FDB entries refused because their owner already holds `max_entries_per_owner` present MACs.
    pub over_cap: u64,
    /// FDB entries, network records or grants refused as malformed (VNI range, too many IPs, bad name...).
    pub malformed: u64,
    /// IPAM grants this admitter signed, and releases.
    pub blocks_granted: u64,
    pub blocks_released: u64,
    /// Every byte handed to the transport (membership and sync).
    pub gossip_bytes_sent: u64,
    /// Bytes and messages of FDB sync traffic (adverts, anti-entropy, catalog/grant repair): what
    /// `gossip_budget` limits.
    pub sync_bytes_sent: u64,
    pub sync_messages_sent: u64,
    /// Sync messages that had to wait for the budget (sent later, in order).
    pub sync_deferred: u64,
    /// Small sync messages dropped because too many were waiting (anti-entropy repeats them).
    pub sync_dropped: u64,
    /// Now: table transfers (one owner's table to one member) in progress or waiting for the budget.
    pub sync_pending: u64,
    /// Batches of local MAC changes flushed (each leaves as one message per member per ~16 KiB).
    pub advert_batches: u64,
    /// Local MACs not advertised because this node already advertises `max_entries_per_owner`
    /// (members would refuse them anyway).
    pub local_over_cap: u64,
    /// Hellos (our signed identity, sent straight to a member we just learnt of) sent, and those
    /// received that verified and named a member not held here yet, handed to foca (which still ignores
    /// an identity it holds as down; see `node/direct.rs`).
    pub hellos_sent: u64,
    pub hellos_accepted: u64,
    /// Members this node declared down and announced straight to every member, and such
    /// announcements applied here.
    pub downs_announced: u64,
    pub downs_applied: u64,
    /// Joins this node answered and introduced to its members (`node/relay.rs`), `Introduce` messages
    /// sent for them, and introductions received that verified and named a member not held yet.
    pub joins_introduced: u64,
    pub introductions_sent: u64,
    pub introductions_accepted: u64,
    /// Table pieces relayed for a joiner: its own pieces forwarded to members, and the tables sent to it.
    pub pieces_relayed: u64,
    /// Direct exchanges (Hello, table push and pull) held after being put off while a member relayed
    /// between this node and the other (`node/relay.rs`).
    pub meetings_put_off: u64,
    /// Table pieces of owners not yet known that were dropped instead of parked (bound reached, or
    /// the owner is revoked); anti-entropy repairs them.
    pub parked_dropped: u64,
}

/// What [`ControlNode::revoke`](super::ControlNode::revoke) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Signed here (this node is an admitter) and being disseminated.
    Revoked,
    /// Already revoked.
    AlreadyRevoked,
    /// Sent to the admitter with this id; it signs and disseminates the revocation.
    Forwarded(NodeId),
}
