//! Membership news that [`ControlNode`] sends straight to members instead of leaving it to SWIM
//! gossip rounds (200 ms each, to 3 members), plus the table pieces that arrive before their owner is
//! known:
//!
//! - **Hello.** When this node learns of a member (foca's MemberUp: from gossip, from the member
//!   itself, or from a join answer too large to list every member), it sends that member its own
//!   signed identity. A member that has not yet heard of us through SWIM then knows us at once, and
//!   takes our table pieces. Members that the answerer of a join introduced to the joiner, and the
//!   members a joiner learns from an answer that lists every member, put their Hello and table
//!   exchange off by 2.5–5 s: the answerer introduced them and relays tables between them meanwhile
//!   (`node/relay.rs`, `control/tests/sim_relay.rs`). The identity is checked exactly as a gossiped
//!   one is (the [`crate::identity::Verifier`]: CA attestation, the node's own signature, VTEP and
//!   gossip address bound to the attestation, not revoked) and accepted only from its own address; it
//!   then enters foca's table as an Alive update would. It is gossiped on only once the receiver holds
//!   more members than a join answer can surely list (foca's Feed, one packet of
//!   `ControlConfig::max_packet_size`: 16 KiB / `IDENTITY_WIRE_BYTES`, ~54 members). Below that, every member hears of a joiner from its
//!   Hello or from its own join answer, and SWIM spreads the join from the member that admitted it;
//!   re-gossiping would only add SWIM traffic (and connections to random members while a real
//!   cluster's handshakes are its bottleneck). Above it, with no re-gossip, most members learnt a
//!   joiner from its Hello, later gossip about it was no news to them, and the join spread only from
//!   the admitting member and from the joiners whose answer listed it: at 128 nodes two members
//!   missing from each other's answers met only at the 5 s periodic announce
//!   (`control/tests/sim_formation.rs`).
//! - **Parked pieces.** Table pieces (`States`) whose owner is not a member yet (its Hello travels on
//!   another stream and may arrive later) are kept, bounded, and merged once the owner is known; each
//!   entry is still verified against the owner's key then.
//! - **Down.** When this node's own suspicion of a member times out and foca declares it down, every
//!   member is told directly, so a crashed node's MACs are withdrawn everywhere one message later
//!   instead of after gossip rounds. A receiver applies it only from an active member and only for an
//!   identity it holds as active: the trust of a SWIM Down update, which any member may gossip.
//!
//! Must never: let an identity that does not verify into foca, accept a Hello on another node's
//! behalf, apply a parked entry without checking its signature, or wait for the gossip budget (these
//! are membership messages).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use foca::{Member, State};

use super::ControlNode;
use crate::membership::NodeIdentity;
use crate::messages::{self, OwnerDump, SyncMessage};
use crate::sync;
use crate::{ControlError, Output};

/// Most weight (entries plus one per piece) held in parked table pieces: beyond it the oldest pieces
/// are dropped (anti-entropy repairs what they carried once their owner is known).
pub(super) const MAX_PARKED_ENTRIES: usize = 4096;

/// An upper estimate of what one signed identity takes in a SWIM packet (see
/// `ControlConfig::max_packet_size`): how many members a join answer can list. About 245 bytes with IPv4
/// addresses (a 65-byte key, two 64-byte signatures, ids and addresses) and some 36 more with IPv6, plus
/// foca's member state. Erring high only starts gossiping Hellos on in a smaller cluster; erring low
/// (220 at first) left 80 simulated nodes unformed after 3 s (`control/tests/sim_formation.rs`).
pub(super) const IDENTITY_WIRE_BYTES: usize = 300;

impl ControlNode {
    /// Tell the member at `to` who we are (it may not have heard of us yet).
    pub(super) fn send_hello(&mut self, to: SocketAddr) -> Result<(), ControlError> {
        self.stats.hellos_sent += 1;
        let hello = SyncMessage::Hello {
            identity: self.identity.clone(),
        };
        self.send_now(to, &hello)
    }

    /// Already an active member with this very identity (the common case once SWIM caught up): it was
    /// verified when it was taken, so a repeat costs no signature check (a member repeating Hellos or
    /// introductions burns no CPU here).
    pub(super) fn holds(&self, identity: &NodeIdentity) -> bool {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .get(&identity.id)
            .is_some_and(|m| m == identity)
    }

    /// Not revoked and verified like a gossiped identity (refusals are counted by the verifier,
    /// `identities_refused`; revoked ids are refused there too).
    pub(super) fn verifies(&self, identity: &NodeIdentity) -> bool {
        !self.revocations.contains(identity.id) && self.verifier_check(identity)
    }

    /// A verified identity into foca's table as an Alive update would enter it; gossiped on only once
    /// one join answer can no longer list every member (see the module header).
    pub(super) fn apply_alive(&mut self, now: Instant, identity: NodeIdentity) -> Result<(), ControlError> {
        let regossip = !self.answer_lists_all();
        self.swim(now, |foca, rt| {
            foca.apply_many(std::iter::once(Member::alive(identity)), regossip, rt)
        })
    }

    /// foca noticed a new member (or a new identity of one): meet it now, or later if a member that
    /// relays between us introduced us (`node/relay.rs`). `answering`: it joined through us.
    pub(super) fn member_up(
        &mut self,
        now: Instant,
        id: &NodeIdentity,
        answering: bool,
    ) -> Result<(), ControlError> {
        // (An admitter coming up also makes us re-send pending block requests: `swim`, once the
        // member table that picks the admitter to ask holds it.)
        if let Some(by) = self.put_off.introducer_of(id.addr) {
            self.put_off_meeting(now, id.addr, by);
            return Ok(());
        }
        self.meet(id, answering)
    }

    /// Meeting a member: our Hello (unless it knows us), our own table pushed (unless `answering`: a
    /// joiner we answered got it with the others), its table pulled, our summary.
    pub(super) fn meet(&mut self, id: &NodeIdentity, answering: bool) -> Result<(), ControlError> {
        // It may not have heard of us yet (we may know it from a join answer's member list, or from
        // gossip): introduce ourselves, so it takes our table now.
        if self.knows_us != Some(id.addr) {
            self.send_hello(id.addr)?;
        }
        // Straight away, not at the next anti-entropy round: push our own table to the new (or
        // restarted) member, and pull its table (its bucket's digest makes it ship what we lack
        // there). Each side does this when it learns of the other, so a joiner's MACs reach a member
        // one round trip after either heard of the other, at the cost of two small messages per
        // pair, not a digest of every owner. Anything else that differs is repaired by anti-entropy.
        let me = self.identity.id;
        if let Some(generation) = self.sync.held_generation(me).filter(|_| !answering) {
            self.outbox.want_table(id.addr, me, generation, 0);
        }
        // The finest bucket (about one owner per bucket up to MAX_BUCKETS owners), not the
        // anti-entropy bucket count: while a cluster forms a node holds few owners, so that count is
        // 1 and the "bucket" was every table; every node then queued every table for every member it
        // learnt of (N² pieces each) and its own table, pushed above, waited behind them in the
        // budget for up to 0.75 s at N = 128 (`control/tests/sim_formation.rs`).
        let k = sync::MAX_BUCKETS;
        let which = BTreeSet::from([sync::bucket_of(id.id, k)]);
        self.send_bucket_digest(id.addr, false, k, which)?;
        // Our revocation, catalog and grant digests, as an answer (no FDB exchange): it ships us what
        // we lack of those; it sends its own when it learns of us.
        let summary = self.summary_message(true, false);
        self.send_sync(id.addr, &summary)
    }

    /// Whether a refuted suspicion of the member at `addr` that timed out at `now` says anything
    /// about our own health: not if we had not heard from it before the probe that raised it (that
    /// probe waited for a new connection, a handshake, which can outlast the probe's round trip
    /// while a cluster forms; our health would then stretch the detection of a real death for
    /// `health_decay`).
    pub(super) fn met_before_probe(&self, now: Instant, addr: SocketAddr) -> bool {
        let probe_started = now
            .checked_sub(self.config.suspect_to_down_after + self.config.probe_period)
            .unwrap_or(now);
        self.first_heard.get(&addr).is_some_and(|t| *t < probe_started)
    }

    /// A member introduced itself: admit its identity to foca's table if it verifies.
    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        identity: NodeIdentity,
    ) -> Result<(), ControlError> {
        // Only a node introduces itself, and never as us.
        if identity.addr != from || identity.addr == self.identity.addr || identity.id == self.identity.id {
            self.stats.rejected += 1;
            return Ok(());
        }
        if self.holds(&identity) || !self.verifies(&identity) {
            return Ok(());
        }
        self.stats.hellos_accepted += 1;
        // It knows us already: no Hello back.
        self.knows_us = Some(from);
        let r = self.apply_alive(now, identity);
        self.knows_us = None;
        r
    }

    /// Our own suspicion of `victim` timed out: if foca now holds it as down, tell every member.
    pub(super) fn announce_down(&mut self, victim: &NodeIdentity) -> Result<(), ControlError> {
        let down = self
            .foca
            .iter_membership_state()
            .any(|m| m.id() == victim && m.state() == State::Down);
        if !down {
            return Ok(());
        }
        let bytes = messages::encode_sync(&SyncMessage::Down {
            identity: victim.clone(),
        })
        .map_err(|e| ControlError::Encode(e.to_string()))?;
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        self.stats.downs_announced += 1;
        for to in peers {
            self.out.push_back(Output::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        Ok(())
    }

    /// A member declared `identity` down: apply it if the sender is an active member and we hold
    /// exactly that identity as active (then it is the one we verified, whatever proof came along).
    pub(super) fn handle_down(
        &mut self,
        now: Instant,
        from: SocketAddr,
        identity: NodeIdentity,
    ) -> Result<(), ControlError> {
        let sender_active = self.foca.iter_members().any(|m| m.id().addr == from);
        if !sender_active || identity.addr == self.identity.addr || identity.addr == from {
            self.stats.rejected += 1;
            return Ok(());
        }
        let held = self
            .foca
            .iter_members()
            .find(|m| m.id() == &identity)
            .map(|m| m.id().clone());
        let Some(held) = held else {
            // Already down here, or not (or no longer) this identity: nothing to do.
            return Ok(());
        };
        self.stats.downs_applied += 1;
        // Not re-gossiped: the declarer gossips it too, and every member got this same notice.
        self.swim(now, |foca, rt| {
            foca.apply_many(std::iter::once(Member::down(held)), false, rt)
        })
    }

    /// Keep a table piece whose owner is not a member yet, to merge once it is. Bounded: a piece weighs
    /// its entries plus one (so empty pieces for made-up owners count too) and the oldest pieces make
    /// room for new ones (an owner that never shows up ages out this way). An empty piece carries
    /// nothing to merge for an owner we do not hold, so it is not kept at all.
    pub(super) fn park_dump(&mut self, dump: OwnerDump) {
        let weight = parked_weight(&dump);
        if dump.entries.is_empty() || self.revocations.contains(dump.owner) || weight > MAX_PARKED_ENTRIES {
            self.stats.parked_dropped += 1;
            return;
        }
        while self.parked_entries + weight > MAX_PARKED_ENTRIES {
            let Some(old) = self.parked.pop_front() else {
                break;
            };
            self.parked_entries -= parked_weight(&old);
            self.stats.parked_dropped += 1;
        }
        self.parked_entries += weight;
        self.parked.push_back(dump);
    }

    /// Membership changed: merge the parked pieces whose owner is now known (at their generation);
    /// keep those still waiting for a newer generation; drop those about an older one.
    pub(super) fn retry_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        self.parked_entries = 0;
        for dump in parked {
            match self.sync.held_generation(dump.owner) {
                // Not relayed: a parked piece did not come first-hand from a join we answered.
                Some(g) if g == dump.generation => {
                    self.merge_dump(dump);
                }
                Some(g) if g > dump.generation => {}
                _ => self.park_dump(dump),
            }
        }
    }
}

/// What a parked piece counts against [`MAX_PARKED_ENTRIES`]: its entries plus one for the piece.
fn parked_weight(dump: &OwnerDump) -> usize {
    dump.entries.len() + 1
}
