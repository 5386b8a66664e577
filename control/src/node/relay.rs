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
//!   active member or a member we joined through and hold nothing of yet (its introductions may
//!   overtake its join answer; not once we hold it only as down or departed), never about the sender
//!   itself or about the receiver, and only for a node it holds no identity of at that generation or
//!   later (news of a join, never a way back for a dead or departed node), and hands it to foca as an
//!   Alive update: the trust of SWIM gossip of that join.
//! - **Tables both ways.** We send the joiner every table we hold (owner-signed entries, each checked
//!   by the joiner against its owner's key, parked until the owner is a member there), and forward
//!   the joiner's own table pieces that we receive first-hand (from the joiner's own address) to every
//!   member, for [`RELAY_WINDOW`] after the join.
//! - **Quiet pairs, put off.** While the join answer can list every member we hold (`listed`), a
//!   member introduced to a joiner, and a joiner learning members from its join answer, put off the
//!   Hello and the table push and pull they would send each other (`ControlNode::meet`) until the
//!   relay has done most of its work: [`MEET_AFTER`] plus a random share of [`MEET_SPREAD`]
//!   (`ControlNode::meet_deferred`). The answerer relays both ways meanwhile, so a forming cluster
//!   does not open its ~N² connections (handshakes) before its MACs are known everywhere; our first
//!   advert batch goes to such a member through the answerer until we hear from it
//!   (`ControlNode::relayed_to`). Put off, not skipped: every such pair still meets directly
//!   afterwards (its connection, over which a death is announced; nothing depends on the answerer
//!   staying up). Spread, not at one instant: all pairs meeting at once opened the whole mesh in one
//!   burst, and the probes that burst delayed raised local health (see `first_heard` in `node.rs`).
//!   Above that size each side introduces itself at once (`node/direct.rs`).
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::direct::IDENTITY_WIRE_BYTES;
use super::outbox::PIECE_BYTES;
use super::ControlNode;
use crate::membership::{NodeId, NodeIdentity};
use crate::messages::{self, FdbEntry, OwnerDump, SyncMessage};
use crate::sync::Pos;
use crate::{ControlError, Output, Timer, TimerKind};

/// How long after a join we forward the joiner's first-hand table pieces to every member.
pub(super) const RELAY_WINDOW: Duration = Duration::from_secs(5);

/// Most bytes of the joiner's own entries forwarded to each member beside the budget, per join: its
/// first piece (a joiner pushes its table in pieces of at most [`PIECE_BYTES`] of entries).
pub(super) const RELAY_PIECE_BYTES: usize = PIECE_BYTES + 1024;

/// Most bytes of tables sent to a joiner beside the budget; the rest follows through the budget.
pub const RELAY_DUMP_BYTES: usize = 4 * PIECE_BYTES;

/// What one owner's `entries` count against [`RELAY_DUMP_BYTES`]: each entry at its widest
/// encoding, and 24 bytes for the owner, its generation and the entry count.
pub fn dump_size(entries: &[FdbEntry]) -> usize {
    entries.iter().map(super::outbox::entry_size).sum::<usize>() + 24
}

/// Least time between two introductions of one node at one generation.
pub(super) const INTRODUCE_AGAIN: Duration = Duration::from_secs(60);

/// How long a pair introduced by a relaying member puts off its direct exchange, at least (the
/// answerer relays for [`RELAY_WINDOW`] from its introduction, which came first).
pub(super) const MEET_AFTER: Duration = Duration::from_millis(2500);

/// Deferred meetings are spread at random over this much time after [`MEET_AFTER`].
pub(super) const MEET_SPREAD: Duration = Duration::from_millis(2500);

/// The pairs whose direct exchange is put off while a member relays between them.
#[derive(Debug, Default)]
pub(super) struct PutOff {
    /// While handling the join answer (foca's Feed) of this seed: the members it lists are introduced
    /// to us by it, and it relays tables between us.
    pub(super) answer_from: Option<SocketAddr>,
    /// We joined (`ControlNode::join`) and no seed's Feed has answered yet.
    pub(super) awaiting_answer: bool,
    /// While handling a `listed` introduction: (the joiner, the member introducing it).
    quiet_up: Option<(SocketAddr, SocketAddr)>,
    /// Members introduced to us by a member that relays between us: member → (that member, until
    /// when). Our first advert batch goes to that member instead, until we hear from the member.
    via: HashMap<SocketAddr, (SocketAddr, Instant)>,
    /// When each put-off meeting is due.
    deferred: BTreeMap<SocketAddr, Instant>,
}

impl PutOff {
    /// A message came from `addr`: it knows us, our batches go to it directly.
    pub(super) fn heard_from(&mut self, addr: SocketAddr) {
        if !self.via.is_empty() {
            self.via.remove(&addr);
        }
    }

    /// Forget members foca no longer holds at all.
    pub(super) fn retain(&mut self, known: &HashSet<SocketAddr>) {
        self.via.retain(|a, _| known.contains(a));
        self.deferred.retain(|a, _| known.contains(a));
    }

    /// The member that introduced `member` to us and relays between us, if its MemberUp comes from
    /// that introduction (a `listed` one, or the join answer of a seed that lists it).
    pub(super) fn introducer_of(&self, member: SocketAddr) -> Option<SocketAddr> {
        match (self.quiet_up, self.answer_from) {
            (Some((joiner, by)), _) if joiner == member => Some(by),
            (_, Some(by)) if by != member => Some(by),
            _ => None,
        }
    }
}

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
        let listed = self.answer_lists_all();
        let bytes = messages::encode_sync(&SyncMessage::Introduce {
            identity: joiner.clone(),
            listed,
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
            let size = dump_size(&entries);
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
            self.relay_to_joiners(now, from, owner, generation, &applied);
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

    /// Pieces that other owners sent us themselves go, through the budget, to the members that
    /// joined through us lately: those owners put off sending them their first batch
    /// ([`Self::relayed_to`]).
    fn relay_to_joiners(
        &mut self,
        now: Instant,
        from: SocketAddr,
        owner: NodeId,
        generation: u64,
        applied: &[FdbEntry],
    ) {
        if self.relays.values().all(|r| r.until <= now) {
            return;
        }
        let first_hand = self
            .owner_identity(owner, generation)
            .is_some_and(|o| o.addr == from);
        if !first_hand {
            return;
        }
        let first_seq = applied.iter().map(|e| e.seq).min().unwrap_or(0);
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let joiners: Vec<SocketAddr> = self
            .relays
            .values()
            .filter(|r| r.until > now && r.addr != from && active.contains(&r.addr))
            .map(|r| r.addr)
            .collect();
        for to in joiners {
            self.outbox.extend_table(to, owner, generation, first_seq);
        }
    }

    /// Meet `member` at [`MEET_AFTER`] plus a random share of [`MEET_SPREAD`] from now, and send our
    /// first advert batch to it through `by` until then (or until we hear from it).
    pub(super) fn put_off_meeting(&mut self, now: Instant, member: SocketAddr, by: SocketAddr) {
        let spread = MEET_SPREAD.as_millis() as usize;
        let at = now + MEET_AFTER + Duration::from_millis(self.rng.below(spread.max(1)) as u64);
        self.put_off.via.insert(member, (by, now + MEET_AFTER));
        self.put_off.deferred.insert(member, at);
        self.out.push_back(Output::ScheduleTimer {
            at,
            timer: Timer(TimerKind::Meet),
        });
    }

    /// The meetings put off while a relay lasted, now due: every such pair still says Hello and
    /// exchanges tables directly (its connection; nothing depends on the introducer staying up).
    pub(super) fn meet_deferred(&mut self, now: Instant) -> Result<(), ControlError> {
        let due: Vec<SocketAddr> = self
            .put_off
            .deferred
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(a, _)| *a)
            .collect();
        // Every due meeting is taken out and held, also after one fails (the first error is returned).
        let mut result = Ok(());
        for addr in due {
            self.put_off.deferred.remove(&addr);
            let member = self.foca.iter_members().find(|m| m.id().addr == addr);
            if let Some(id) = member.map(|m| m.id().clone()) {
                self.stats.meetings_put_off += 1;
                let r = self.meet(&id, false);
                if result.is_ok() {
                    result = r;
                }
            }
        }
        result
    }

    /// Whether our first advert batch to `member` goes through the member that introduced it to us:
    /// until we hear from it, for [`MEET_AFTER`] at most, and only while the introducer is a member.
    pub(super) fn relayed_to(&self, now: Instant, member: &SocketAddr) -> bool {
        self.put_off
            .via
            .get(member)
            .is_some_and(|(by, until)| *until > now && self.foca.iter_members().any(|m| m.id().addr == *by))
    }

    /// A member introduced a node that joined through it: admit the identity to foca's table if it
    /// verifies (see the module header). `listed`: the joiner's answer listed us, and the sender
    /// relays tables between us: our exchange with the joiner is put off.
    pub(super) fn handle_introduce(
        &mut self,
        now: Instant,
        from: SocketAddr,
        identity: NodeIdentity,
        listed: bool,
    ) -> Result<(), ControlError> {
        // From an active (alive or suspect) member, or from a member we joined through that we have
        // never held yet (its introduction of a later joiner may overtake its answer to our own join:
        // they travel on different streams). Not from a seed we hold only as down or as departed, nor
        // once foca has forgotten it (`held_seeds`; `left` if it left before we ever held it): joining
        // through it once is no trust in it after its death or leave.
        let sender_active = self.foca.iter_members().any(|m| m.id().addr == from);
        let seed_unanswered = self.seeds.contains(&from)
            && !self.held_seeds.contains(&from)
            && !self.left.contains_key(&from)
            && !self.foca.iter_membership_state().any(|m| m.id().addr == from);
        let sender_known = sender_active || seed_unanswered;
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
        if listed {
            self.put_off.quiet_up = Some((identity.addr, from));
        }
        let r = self.apply_alive(now, identity);
        self.put_off.quiet_up = None;
        r
    }
}
