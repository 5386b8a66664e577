//! Joins relayed by the member that answers them, so that a joiner's MACs and the cluster's MACs
//! travel over connections that already exist instead of waiting for a connection between every pair
//! (on a real cluster each new QUIC connection costs a handshake, and a forming cluster of N opens
//! ~N² of them on few CPUs).
//!
//! - **Introduce.** When a node's own SWIM Announce (its join) reaches us and makes it a member here,
//!   we answered its join (foca's Feed lists the members we hold) and now introduce the joiner to
//!   every member we hold with [`SyncMessage::Introduce`], over our connections to them. A receiver
//!   verifies the identity exactly as a gossiped one ([`crate::identity::Verifier`]: CA attestation,
//!   the node's signature, VTEP and address bound to the attestation, not revoked), only from an
//!   active member or a member we joined through (its introductions may overtake its join answer),
//!   never about the sender itself or about the receiver, and only for a node it holds no identity of
//!   at that generation or later (news of a join, never a way back for a dead or departed node), and
//!   hands it to foca as an Alive update: the trust of SWIM gossip of that join.
//! - **Tables both ways.** We send the joiner every table we hold (owner-signed entries, each checked
//!   by the joiner against its owner's key, parked until the owner is a member there), and forward
//!   the joiner's own table pieces that we receive first-hand (from the joiner's own address) to every
//!   member, for [`RELAY_WINDOW`] after the join.
//! - **Both ways, not instead.** The joiner and the members still introduce themselves to each other
//!   and exchange tables directly as they meet (`node/membership.rs`, `node/direct.rs`): the relay only
//!   means nobody waits for those connections. (Skipping that exchange while the relay lasted, tried
//!   first, left pairs without a connection and a joiner's table with one member if the introducer
//!   died at once, and made a death's announcement wait for handshakes.)
//! - **Once per node and generation.** A node is introduced, and its tables relayed, at most once per
//!   [`INTRODUCE_AGAIN`] for one generation, and never for a renewal alone (any member may announce
//!   one at no cost): a member re-announcing itself cannot make us send its tables and its pieces
//!   beside the budget again and again.
//!
//! Beside the gossip budget, bounded: relayed pieces are what the joiner and the members would
//! otherwise have sent each other themselves, and waiting for one node's budget (the answerer of
//! every join) would serialise the cluster's formation behind it. Per join, at most
//! [`RELAY_DUMP_BYTES`] of tables go to the joiner and the joiner's first piece (at most
//! [`RELAY_PIECE_BYTES`]) to each member at once; the rest of either goes through the budget (table
//! cursors, bounded by each owner's capped table). A flood of a joiner's MACs is therefore relayed at
//! most one piece per member beyond the budget, and the per-owner cap still applies at every
//! receiver (`control/tests/sim_relay.rs`, and `control/tests/sim_budget.rs` still holds every node
//! to its budget when members flood right after the cluster formed).
//!
//! Must never: let an identity that does not verify into foca, relay an entry we did not ourselves
//! verify and apply, or relay a piece that did not come first-hand from its owner.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::direct::IDENTITY_WIRE_BYTES;
use super::outbox::PIECE_BYTES;
use super::ControlNode;
use crate::membership::{NodeId, NodeIdentity};
use crate::messages::{self, FdbEntry, OwnerDump, SyncMessage};
use crate::sync::Pos;
use crate::{ControlError, Output};

/// How long after a join we forward the joiner's first-hand table pieces to every member.
pub(super) const RELAY_WINDOW: Duration = Duration::from_secs(5);

/// Most bytes of the joiner's own entries forwarded to each member beside the budget, per join: its
/// first piece (a joiner pushes its table in pieces of at most [`PIECE_BYTES`] of entries).
pub(super) const RELAY_PIECE_BYTES: usize = PIECE_BYTES + 1024;

/// Most bytes of tables sent to a joiner beside the budget; the rest follows through the budget.
pub(super) const RELAY_DUMP_BYTES: usize = 4 * PIECE_BYTES;

/// Least time between two introductions of one node at one generation.
pub(super) const INTRODUCE_AGAIN: Duration = Duration::from_secs(60);

/// A join we answered: its owner's pieces are forwarded until `until`; the first one beside the
/// budget (`first_done` once it went), the later ones through it. Kept for [`INTRODUCE_AGAIN`].
#[derive(Debug, Clone)]
pub(super) struct Relay {
    addr: SocketAddr,
    generation: u64,
    introduced: Instant,
    until: Instant,
    first_done: bool,
}

/// Joins being relayed, by joiner id.
pub(super) type Relays = HashMap<NodeId, Relay>;

impl ControlNode {
    /// Whether a join answer (foca's Feed, one packet) can list every member we hold.
    pub(super) fn answer_lists_all(&self) -> bool {
        self.foca.num_members() + 2 <= self.config.max_packet_size / IDENTITY_WIRE_BYTES
    }

    /// `joiner` announced itself to us and is now a member here: introduce it to every member we hold
    /// and send it every table we hold.
    pub(super) fn introduce(&mut self, now: Instant, joiner: &NodeIdentity) -> Result<(), ControlError> {
        self.relays.retain(|_, r| now < r.introduced + INTRODUCE_AGAIN);
        if self
            .relays
            .get(&joiner.id)
            .is_some_and(|r| r.generation >= joiner.generation)
        {
            return Ok(());
        }
        let bytes = messages::encode_sync(&SyncMessage::Introduce {
            identity: joiner.clone(),
        })
        .map_err(|e| ControlError::Encode(e.to_string()))?;
        let peers: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .map(|m| m.id().addr)
            .filter(|a| *a != joiner.addr)
            .collect();
        self.stats.joins_introduced += 1;
        self.stats.introductions_sent += peers.len() as u64;
        for to in peers {
            self.out.push_back(Output::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        self.relays.insert(
            joiner.id,
            Relay {
                addr: joiner.addr,
                generation: joiner.generation,
                introduced: now,
                until: now + RELAY_WINDOW,
                first_done: false,
            },
        );
        self.send_tables_to(joiner)
    }

    /// Every table we hold (ours up to what our advert batches released), to `joiner`: up to
    /// [`RELAY_DUMP_BYTES`] at once, the rest through the budget.
    fn send_tables_to(&mut self, joiner: &NodeIdentity) -> Result<(), ControlError> {
        let me = self.identity.id;
        let mut budget_left = RELAY_DUMP_BYTES;
        let mut batch: Vec<OwnerDump> = Vec::new();
        let mut batch_bytes = 0;
        for d in self.sync.digest() {
            if d.owner == joiner.id {
                continue;
            }
            let limit = if d.owner == me {
                self.outbox.own_released
            } else {
                u64::MAX
            };
            let entries: Vec<FdbEntry> = self
                .sync
                .entries_from(d.owner, d.generation, Pos::FromSeq(0))
                .take_while(|(pos, _)| pos.0 <= limit)
                .map(|(_, e)| e.clone())
                .collect();
            if entries.is_empty() {
                continue;
            }
            let size: usize = entries.iter().map(super::outbox::entry_size).sum::<usize>() + 24;
            if size > budget_left {
                // Through the budget (and the per-owner cursor's pieces).
                self.outbox.want_table(joiner.addr, d.owner, d.generation, 0);
                continue;
            }
            budget_left -= size;
            if batch_bytes + size > PIECE_BYTES && !batch.is_empty() {
                self.send_states_now(joiner.addr, std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(OwnerDump {
                owner: d.owner,
                generation: d.generation,
                entries,
            });
        }
        if !batch.is_empty() {
            self.send_states_now(joiner.addr, batch)?;
        }
        Ok(())
    }

    fn send_states_now(&mut self, to: SocketAddr, owners: Vec<OwnerDump>) -> Result<(), ControlError> {
        self.stats.pieces_relayed += 1;
        self.send_now(to, &SyncMessage::States { owners })
    }

    /// `applied`: entries of `owner`'s table (at `generation`) that a piece from `from` just added
    /// here, each verified against the owner's key. Forward them to every member if `owner` joined
    /// through us lately and sent them itself.
    pub(super) fn relay_first_hand(
        &mut self,
        now: Instant,
        from: SocketAddr,
        owner: NodeId,
        generation: u64,
        applied: Vec<FdbEntry>,
    ) -> Result<(), ControlError> {
        if applied.is_empty() {
            return Ok(());
        }
        let recent = self
            .relays
            .get(&owner)
            .is_some_and(|r| r.addr == from && r.generation == generation && now < r.until);
        if !recent {
            return Ok(());
        }
        let Some(r) = self.relays.get(&owner) else {
            return Ok(());
        };
        let first_done = r.first_done;
        if let Some(r) = self.relays.get_mut(&owner) {
            r.first_done = true;
        }
        let first_seq = applied.iter().map(|e| e.seq).min().unwrap_or(0);
        let peers: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .map(|m| m.id().addr)
            .filter(|a| *a != from)
            .collect();
        let bytes = messages::encode_sync(&SyncMessage::States {
            owners: vec![OwnerDump {
                owner,
                generation,
                entries: applied,
            }],
        })
        .map_err(|e| ControlError::Encode(e.to_string()))?;
        if first_done || bytes.len() > RELAY_PIECE_BYTES {
            // Its first piece went (or this one is too large): the rest goes through the budget.
            for to in peers {
                self.outbox.extend_table(to, owner, generation, first_seq);
            }
            return Ok(());
        }
        self.stats.pieces_relayed += peers.len() as u64;
        for to in peers {
            self.out.push_back(Output::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        Ok(())
    }

    /// A member introduced a node that joined through it: admit the identity to foca's table if it
    /// verifies (see the module header).
    pub(super) fn handle_introduce(
        &mut self,
        now: Instant,
        from: SocketAddr,
        identity: NodeIdentity,
    ) -> Result<(), ControlError> {
        // From an active member, or from a member we joined through (its introduction of a later
        // joiner may overtake its answer to our own join: they travel on different streams).
        let sender_known =
            self.seeds.contains(&from) || self.foca.iter_members().any(|m| m.id().addr == from);
        if !sender_known
            || identity.addr == from
            || identity.addr == self.identity.addr
            || identity.id == self.identity.id
        {
            self.stats.rejected += 1;
            return Ok(());
        }
        if self.holds(&identity) {
            return Ok(());
        }
        // Only a node we hold no identity of at this generation or later: an introduction is news of
        // a join, never a way back for an identity foca holds as down or left (a renewal would win
        // foca's conflict and bring a dead node back alive in one hop; its own refutation is what
        // may do that).
        if self
            .foca
            .iter_membership_state()
            .any(|m| m.id().id == identity.id && m.id().generation >= identity.generation)
        {
            self.stats.rejected += 1;
            return Ok(());
        }
        if !self.verifies(&identity) {
            return Ok(());
        }
        self.stats.introductions_accepted += 1;
        self.apply_alive(now, identity)
    }
}
