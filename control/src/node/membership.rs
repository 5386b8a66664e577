//! SWIM membership of [`ControlNode`]: every foca call and what it noticed (new members, a renewed
//! identity after a false death), aligning the FDB owners with the members, the piggybacked
//! broadcasts foca hands over, and the member list.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use foca::{OwnedNotification, State};

use super::{ControlNode, MemberInfo, MemberState, SwimCore};
use crate::membership::{NodeId, NodeIdentity, Rt};
use crate::messages::Broadcast;
use crate::{ControlError, Output};

/// Most addresses one re-announce round knocks at (see [`ControlNode::reannounce`]).
pub(super) const REANNOUNCE_FANOUT: usize = 2;

/// foca's connection state as its notifications tell it, and the re-announces while it is lost.
///
/// Why: foca 2.0 runs every periodic task (probes, gossip, announces, announces to down members) only
/// while Connected, and gets Connected only in `apply_many` when it holds an active member. A renewal
/// (`Foca::change_identity`, after the cluster declared this node down) resets it to Disconnected
/// (`Foca::reset`, no Idle notification) and gossips the new identity once, to the members it holds,
/// addressed to the identities it holds for them; foca drops any packet but an Announce that is not
/// addressed to its own current identity (`Foca::accept_payload`). After a full partition heals, the
/// sides' announces to down members are phase-locked (every node became Connected when the cluster
/// formed) and the TurnUndead answers make every node renew within a few milliseconds. Every renewal
/// gossip is then addressed to an identity its receiver has just given up, and dropped: every node
/// stays Disconnected, holding its side at the old identities (alive) and the other side dead, and
/// never sends a SWIM packet again (`control/tests/sim_partition.rs`). Re-announcing while
/// disconnected is what foca's own join does; the Feed that answers it is addressed to our current
/// identity and reconnects foca.
#[derive(Debug, Default)]
pub(super) struct Reconnect {
    /// foca is Connected: set by its Active notification, cleared by Idle, Defunct and Rejoin.
    pub(super) connected: bool,
    /// When the last round triggered by a renewal went out (at most one per anti-entropy interval).
    last_rejoin_round: Option<Instant>,
    /// Round-robin position in the candidate addresses.
    cursor: usize,
}

impl ControlNode {
    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut v = vec![MemberInfo {
            id: hex_id(self.identity.id),
            addr: self.identity.addr,
            vtep: self.identity.vtep,
            state: if self.has_left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            generation: self.identity.generation,
            renewal: self.identity.renewal,
        }];
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if self.revocations.contains(id.id) || self.is_own_past_identity(id) {
                continue;
            }
            let state = match m.state() {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Down
                    if self
                        .left
                        .get(&id.addr)
                        .is_some_and(|l| l.generation == id.generation) =>
                {
                    MemberState::Left
                }
                State::Down => MemberState::Dead,
            };
            v.push(MemberInfo {
                id: hex_id(id.id),
                addr: id.addr,
                vtep: id.vtep,
                state,
                generation: id.generation,
                renewal: id.renewal,
            });
        }
        v
    }

    /// An earlier renewal or run of this node. foca files any identity at our address other than our own
    /// as down (after a rejoin the cluster is still spreading the death that caused it) and keeps it for
    /// `remove_down_after` (a day), so that later copies of that death are stale and not spread again.
    /// It stays in foca's table, but is not a member: listing it showed this node twice, alive and dead.
    /// Another node id at our address (a former owner of the address) is listed as foca holds it.
    fn is_own_past_identity(&self, id: &NodeIdentity) -> bool {
        id.id == self.identity.id
            && id.addr == self.identity.addr
            && (id.generation, id.renewal) < (self.identity.generation, self.identity.renewal)
    }

    /// Gossip addresses of the active members whose attestation says admitter (where a joiner's
    /// request is best relayed), by node id.
    pub fn admitter_addrs(&self) -> Vec<SocketAddr> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(NodeId, SocketAddr)> = shared
            .members
            .values()
            .filter(|m| m.id != self.identity.id && !self.revocations.contains(m.id))
            .filter(|m| m.attestation().is_some_and(|a| a.admitter))
            .map(|m| (m.id, m.addr))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// Number of active (alive or suspect) members besides this node.
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Run one foca call with a runtime writing into our queue, then react to what it noticed.
    pub(super) fn swim<F>(&mut self, now: Instant, f: F) -> Result<(), ControlError>
    where
        F: FnOnce(&mut SwimCore, Rt<'_>) -> Result<(), foca::Error>,
    {
        let mut notes = std::mem::take(&mut self.notes);
        let r = f(
            &mut self.foca,
            Rt {
                now,
                out: &mut self.out,
                notes: &mut notes,
            },
        );
        let membership_changed = !notes.is_empty();
        let mut rejoined = false;
        let mut admitter_up = false;
        // A failure to meet one member (an encoding error) does not stop the notes after it (a
        // Rejoin's new identity, other members coming up): it is returned last, the first one.
        let mut met: Result<(), ControlError> = Ok(());
        for note in notes.drain(..) {
            let renewal_only = matches!(&note, OwnedNotification::Rename(old, new)
                if old.id == new.id && old.generation == new.generation);
            match note {
                OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id) => {
                    // It joined through us: introduce it to every member and send it our tables
                    // (`node/relay.rs`); its own table comes with its first push to us. Not for a
                    // renewal alone (same node and generation: it was a member already), which any
                    // member may announce at no cost.
                    let answering = self.announced_by == Some(id.addr) && !renewal_only;
                    admitter_up |= id.attestation().is_some_and(|a| a.admitter);
                    if self.seeds.contains(&id.addr) {
                        self.held_seeds.insert(id.addr);
                    }
                    if !renewal_only {
                        // A new process there (or a new node): our next probe of it needs a new
                        // connection, as for a node never heard from (`met_before_probe`).
                        self.first_heard.remove(&id.addr);
                    }
                    if answering {
                        met = met.and(self.introduce(now, &id));
                    }
                    // Our Hello and table exchange, now or put off while a member relays between
                    // us (`node/direct.rs`, `node/relay.rs`).
                    met = met.and(self.member_up(now, &id, answering));
                }
                // foca has no accessor for its connection state: follow it through its notifications.
                OwnedNotification::Active => self.reconnect.connected = true,
                OwnedNotification::Idle | OwnedNotification::Defunct => self.reconnect.connected = false,
                OwnedNotification::Rejoin(id) => {
                    // `change_identity` reset foca to Disconnected, without an Idle (see `Reconnect`).
                    self.reconnect.connected = false;
                    // A seed's Feed from now on answers our re-announce, not our join (after a whole
                    // cluster restarted, a seed may have joined us without ever answering ours).
                    self.put_off.awaiting_answer = false;
                    rejoined = true;
                    self.stats.rejoins += 1;
                    tracing::info!(identity = ?id, "declared down by the cluster; rejoined with a renewed identity");
                    self.shared.lock().unwrap_or_else(|e| e.into_inner()).me = Some(id.clone());
                    self.identity = id;
                }
                _ => {}
            }
        }
        self.notes = notes;
        if membership_changed {
            self.reconcile_membership();
        }
        // An admitter came up: pending block requests need not wait for the next tick. Asked here,
        // once the member table that picks the admitter to ask holds it (not from `member_up`,
        // before it does), and not again when a put-off meeting with it takes place. A failure is
        // returned last: the broadcasts foca handed over (adverts, leaves, revocations, records,
        // grants) are applied, and a renewal re-announced, in this call all the same.
        let asked = if admitter_up {
            self.request_pending_blocks()
        } else {
            Ok(())
        };
        self.drain_inbox();
        // Renewed and not reconnected by the same call: knock at once (rate-limited), not only at the
        // next anti-entropy tick.
        let r = r.map_err(|e| ControlError::Swim(e.to_string()));
        if r.is_ok() && rejoined && !self.reconnect.connected {
            self.reannounce(now, true)?;
        }
        r.and(asked).and(met)
    }

    /// While foca is disconnected, announce this node (its current identity) to a few addresses of
    /// the members foca holds, whatever their state and identity there (see [`Reconnect`]): an
    /// Announce is accepted by address, its sender's newer identity wins over any older one held
    /// there (alive or dead), and the answer (a Feed to our current identity) reconnects foca.
    /// At most [`REANNOUNCE_FANOUT`] per round, round-robin (from a random start after each renewal)
    /// over the addresses where foca holds an alive member, else a suspect, else a dead one; a round
    /// on each anti-entropy tick and at most one more per `anti_entropy_interval` right after a
    /// renewal. Only addresses foca already holds (identities verified when they entered its table),
    /// never a revoked node's, one that left or, while no member is active, a join address (those
    /// are knocked separately, `timers.rs`); the receiver verifies our identity as it verifies any join.
    pub(super) fn reannounce(&mut self, now: Instant, on_rejoin: bool) -> Result<(), ControlError> {
        if self.reconnect.connected || self.has_left {
            return Ok(());
        }
        if on_rejoin
            && self
                .reconnect
                .last_rejoin_round
                .is_some_and(|t| now < t + self.config.anti_entropy_interval)
        {
            return Ok(());
        }
        let alone = self.foca.num_members() == 0;
        // Per address the best state foca holds there: alive members first, then suspects, the dead
        // last, so members that really died do not take up the rounds of those that can answer.
        let mut best: BTreeMap<SocketAddr, u8> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let left = self
                .left
                .get(&id.addr)
                .is_some_and(|l| l.generation >= id.generation);
            let excluded = id.addr == self.identity.addr
                || self.revocations.contains(id.id)
                || self.revoked_addrs.contains(&id.addr)
                || left
                || (alone && self.seeds.contains(&id.addr));
            if excluded {
                continue;
            }
            let rank = match m.state() {
                State::Alive => 0,
                State::Suspect => 1,
                State::Down => 2,
            };
            let e = best.entry(id.addr).or_insert(rank);
            *e = (*e).min(rank);
        }
        let Some(&top) = best.values().min() else {
            return Ok(());
        };
        let targets: Vec<SocketAddr> = best
            .into_iter()
            .filter(|&(_, rank)| rank == top)
            .map(|(addr, _)| addr)
            .collect();
        if on_rejoin {
            self.reconnect.last_rejoin_round = Some(now);
            // Every node of a healed partition renews at about the same time: start each one's
            // round-robin somewhere else, so they do not all knock at the same two addresses.
            self.reconnect.cursor = self.rng.below(targets.len());
        }
        let n = REANNOUNCE_FANOUT.min(targets.len());
        for k in 0..n {
            let addr = targets[(self.reconnect.cursor + k) % targets.len()];
            self.stats.reannounces += 1;
            let dst = NodeIdentity::placeholder(addr);
            self.swim(now, |foca, rt| foca.announce(dst, rt))?;
        }
        self.reconnect.cursor = self.reconnect.cursor.wrapping_add(n);
        Ok(())
    }

    /// Align the FDB owners with foca's active members (newest generation per node id, revoked excluded).
    pub(super) fn reconcile_membership(&mut self) {
        let mut eligible: BTreeMap<NodeId, (u64, IpAddr)> = BTreeMap::new();
        let mut idents: HashMap<NodeId, NodeIdentity> = HashMap::new();
        for m in self.foca.iter_membership_state() {
            if matches!(m.state(), State::Down) {
                continue;
            }
            let id = m.id();
            if self.revocations.contains(id.id) || id.id == self.identity.id {
                continue;
            }
            let e = eligible.entry(id.id).or_insert((id.generation, id.vtep));
            if id.generation > e.0 {
                *e = (id.generation, id.vtep);
            }
            let newer = match idents.get(&id.id) {
                Some(x) => id.generation > x.generation,
                None => true,
            };
            if newer {
                idents.insert(id.id, id.clone());
            }
        }
        // An address reused by a (re-admitted) non-revoked node is no longer blocked.
        if !self.revoked_addrs.is_empty() {
            for i in idents.values() {
                self.revoked_addrs.remove(&i.addr);
            }
        }
        let known: HashSet<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
        self.last_heard.retain(|a, _| known.contains(a));
        self.first_heard.retain(|a, _| known.contains(a));
        self.unmet_deferred.retain(|(id, _)| known.contains(&id.addr));
        self.put_off.retain(&known);
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        self.outbox.retain_peers(|a| active.contains(a));
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).members = idents;
        self.sync.set_eligible(&eligible, &mut self.out);
        self.out.push_back(Output::MembersChanged(Vec::new()));
        // Adverts and table pieces that arrived before their owner became known.
        let pending = std::mem::take(&mut self.pending);
        for a in pending {
            self.apply_advert(a, false);
        }
        self.retry_parked();
    }

    pub(super) fn drain_inbox(&mut self) {
        let inbox = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut shared.inbox)
        };
        for item in inbox {
            match item {
                Broadcast::Fdb(a) => {
                    // The handler verified it iff it knew the owner (then held generation matches).
                    let verified = self.sync.held_generation(a.owner) == Some(a.generation);
                    self.apply_advert(a, verified);
                }
                // Label only (see `Broadcast::Leave`): the direct notice or SWIM takes it down. The
                // handler checked the identity and the leave signature.
                Broadcast::Leave(n) if n.identity.addr != self.identity.addr => {
                    self.left.insert(n.identity.addr, n.identity);
                    self.out.push_back(Output::MembersChanged(Vec::new()));
                }
                Broadcast::Leave(_) => {}
                Broadcast::Revoke(r) => self.pending_revocations.push(r),
                // The handler verified these (self-contained signatures).
                Broadcast::Network(r) => {
                    self.apply_network_record(r, true);
                    self.report_networks();
                }
                Broadcast::Grant(g) => {
                    self.apply_grant(g, true);
                    self.report_blocks();
                }
            }
        }
    }

    /// The newest active identity of `node` (verified when it entered foca's table).
    pub(super) fn active_identity(&self, node: NodeId) -> Option<NodeIdentity> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.members.get(&node).cloned()
    }

    pub(super) fn owner_identity(&self, owner: NodeId, generation: u64) -> Option<NodeIdentity> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.signer_of(owner, generation).cloned()
    }

    pub(super) fn verifier_check(&self, ident: &NodeIdentity) -> bool {
        self.verifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(ident)
            .is_ok()
    }
}

/// A node id as its `Display` writes it (16 lower-case hex digits), without the formatter:
/// [`ControlNode::members`] runs on every membership change and writes every member's id (through
/// `format!` that was the costliest part of a simulated cluster's formation).
pub(super) fn hex_id(id: NodeId) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..16)
        .rev()
        .map(|i| HEX[((id.0 >> (i * 4)) & 0xf) as usize] as char)
        .collect()
}
