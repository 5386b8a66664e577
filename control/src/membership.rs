//! Membership glue around foca (SWIM): the cluster identity type, a seeded RNG, the runtime adapter that
//! turns foca's callbacks into [`Output`]s, and the custom-broadcast handler (leaves, revocations,
//! network records, block grants; FDB adverts are checked and applied but not relayed).
//!
//! The identity type itself and its verification live in [`crate::identity`].
//! Must never: do I/O, read a clock, relay an item whose signature does not verify, or decide FDB
//! winners (that is [`crate::sync`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{BroadcastHandler, Invalidates, Notification, OwnedNotification, Runtime};

use crate::messages::{self, Broadcast};
use crate::{MacAddr, Output, Timer, TimerKind};

pub use crate::identity::{NodeId, NodeIdentity};

/// xorshift64* : tiny, seedable, deterministic. Used for foca's member selection and for picking
/// anti-entropy partners. Not cryptographic and it need not be.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift; splitmix the seed so nearby seeds diverge.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 1 } else { z })
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0), with negligible bias for the small n used here.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl rand_core::TryRng for XorShift {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next_u64() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// Adapter handed to foca for one call: sends and timers become [`Output`]s, notifications are kept for
/// the node to act on after foca returns (foca holds `&mut self` while it calls us).
pub(crate) struct Rt<'a> {
    pub now: Instant,
    pub out: &'a mut VecDeque<Output>,
    pub notes: &'a mut Vec<OwnedNotification<NodeIdentity>>,
}

impl Runtime<NodeIdentity> for Rt<'_> {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.out.push_back(Output::Send {
            to: to.addr,
            bytes: messages::encode_swim(data),
        });
    }

    fn submit_after(&mut self, event: foca::Timer<NodeIdentity>, after: Duration) {
        self.out.push_back(Output::ScheduleTimer {
            at: self.now + after,
            timer: Timer(TimerKind::Swim(event)),
        });
    }
}

/// State shared between the broadcast handler (owned by foca, which offers no accessor to it) and the
/// node: the newest version seen per (owner, MAC) and per leaving address, the verified identities of
/// active members (whose keys check adverts and leaves), and items accepted but not yet applied.
#[derive(Debug, Default)]
pub(crate) struct BroadcastShared {
    pub seen: HashMap<(NodeId, u32, MacAddr), (u64, u64)>,
    /// Newest rank relayed per network name and per (network, block) grant.
    pub seen_networks: HashMap<String, (u64, bool, u64, Vec<u8>)>,
    pub seen_grants: HashMap<(String, ipnet::IpNet), crate::ipam::GrantRank>,
    pub seen_leaves: HashMap<SocketAddr, (u64, u32)>,
    /// Newest active identity per node id (set by the node from foca's member table).
    pub members: HashMap<NodeId, NodeIdentity>,
    /// The node's own identity: its adverts pass through the handler too.
    pub me: Option<NodeIdentity>,
    pub ca_key: Vec<u8>,
    pub revoked: std::collections::HashSet<NodeId>,
    pub inbox: Vec<Broadcast>,
    /// Items refused because a signature did not verify.
    pub bad_signatures: u64,
    /// Highest seq relayed per (owner, generation): an advert further than `sync::MAX_JUMP` ahead is
    /// neither relayed nor applied (counted in `too_far`), so one cannot poison `seen` for later ones.
    pub seen_max: HashMap<(NodeId, u64), u64>,
    pub too_far: u64,
}

impl BroadcastShared {
    /// The identity whose key must have signed a claim by `owner` at `generation`, if known.
    pub fn signer_of(&self, owner: NodeId, generation: u64) -> Option<&NodeIdentity> {
        if let Some(me) = self.me.as_ref().filter(|m| m.id == owner) {
            return Some(me);
        }
        self.members.get(&owner).filter(|m| m.generation == generation)
    }
}

/// foca custom-broadcast handler: keeps disseminating an item only while it is the newest known for
/// its subject (address for leaves, node for revocations, name for networks, block for grants) and
/// only if its signature verifies. A single FDB advert (older overlayd versions piggybacked them)
/// is checked and handed to the node but never relayed; adverts of an owner not known yet are
/// parked by the node until the owner's identity arrives.
#[derive(Debug, Clone)]
pub(crate) struct FdbBroadcasts {
    pub shared: Arc<Mutex<BroadcastShared>>,
    pub verifier: Arc<Mutex<crate::identity::Verifier>>,
}

/// Dissemination key: a newer version for the same subject replaces an older one in foca's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BroadcastKey {
    Network {
        name: String,
        rank: (u64, bool, u64, Vec<u8>),
    },
    Grant {
        network: String,
        block: ipnet::IpNet,
        rank: crate::ipam::GrantRank,
    },
    Leave {
        addr: SocketAddr,
        version: (u64, u32),
    },
    Revoke {
        node: NodeId,
    },
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastKey::Network { name, rank }, BroadcastKey::Network { name: n, rank: r }) => {
                name == n && rank >= r
            }
            (
                BroadcastKey::Grant { network, block, rank },
                BroadcastKey::Grant {
                    network: n,
                    block: b,
                    rank: r,
                },
            ) => network == n && block == b && rank >= r,
            (BroadcastKey::Leave { addr, version }, BroadcastKey::Leave { addr: a, version: v }) => {
                addr == a && version >= v
            }
            (BroadcastKey::Revoke { node }, BroadcastKey::Revoke { node: n }) => node == n,
            _ => false,
        }
    }
}

impl BroadcastHandler<NodeIdentity> for FdbBroadcasts {
    type Key = BroadcastKey;
    type Error = crate::DecodeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeIdentity>,
    ) -> Result<Option<BroadcastKey>, Self::Error> {
        let item = messages::decode_broadcast(data)?;
        // A poisoned lock only means another thread panicked mid-update of plain maps; the data is
        // still structurally valid, so keep going rather than take the control plane down.
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let key = match &item {
            Broadcast::Fdb(advert) => {
                let mac = MacAddr(advert.entry.mac);
                let version = (advert.generation, advert.entry.seq);
                let subject = (advert.owner, advert.entry.vni, mac);
                if !advert.entry.well_formed() {
                    return Err(crate::DecodeError::Body("malformed FDB advert".into()));
                }
                if shared.seen.get(&subject).is_some_and(|&old| old >= version) {
                    return Ok(None);
                }
                match shared.signer_of(advert.owner, advert.generation) {
                    None => {
                        // Unknown owner: the node parks it and checks it once the owner is known.
                        shared.inbox.push(item);
                        return Ok(None);
                    }
                    Some(owner) if !advert.entry.verify(owner, advert.generation) => {
                        shared.bad_signatures += 1;
                        return Err(crate::DecodeError::Signature(advert.owner));
                    }
                    Some(_) => {}
                }
                let max = shared
                    .seen_max
                    .get(&(advert.owner, advert.generation))
                    .copied()
                    .unwrap_or(0);
                if advert.entry.seq > max.saturating_add(crate::sync::MAX_JUMP) {
                    shared.too_far += 1;
                    return Ok(None);
                }
                shared
                    .seen_max
                    .insert((advert.owner, advert.generation), max.max(advert.entry.seq));
                shared.seen.insert(subject, version);
                // Applied, never relayed: FDB traffic travels in budgeted batches (`SyncMessage::States`,
                // see `node/outbox.rs`), never inside membership packets, so that a MAC flood cannot
                // grow the packets that carry probes. This node no longer sends single adverts.
                shared.inbox.push(item);
                return Ok(None);
            }
            Broadcast::Leave(notice) => {
                let id = &notice.identity;
                // The identity must be one we hold (or at least attested) and the leave signed by it.
                let attested = self
                    .verifier
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(id)
                    .is_ok();
                if !attested || !notice.verify_sig() {
                    shared.bad_signatures += 1;
                    return Err(crate::DecodeError::Signature(id.id));
                }
                let version = (id.generation, id.renewal);
                if shared
                    .seen_leaves
                    .get(&id.addr)
                    .is_some_and(|&old| old >= version)
                {
                    return Ok(None);
                }
                shared.seen_leaves.insert(id.addr, version);
                BroadcastKey::Leave {
                    addr: id.addr,
                    version,
                }
            }
            Broadcast::Revoke(r) => {
                if shared.revoked.contains(&r.node) {
                    return Ok(None);
                }
                if !r.verify(&shared.ca_key) {
                    shared.bad_signatures += 1;
                    return Err(crate::DecodeError::Signature(r.node));
                }
                shared.revoked.insert(r.node);
                BroadcastKey::Revoke { node: r.node }
            }
            Broadcast::Network(r) => {
                let rank = r.rank();
                if shared.seen_networks.get(&r.name).is_some_and(|old| *old >= rank) {
                    return Ok(None);
                }
                if !r.verify(&shared.ca_key) {
                    shared.bad_signatures += 1;
                    return Err(crate::DecodeError::Signature(r.author.node));
                }
                if shared.seen_networks.len() >= crate::catalog::MAX_RECORDS
                    && !shared.seen_networks.contains_key(&r.name)
                {
                    return Ok(None);
                }
                shared.seen_networks.insert(r.name.clone(), rank.clone());
                BroadcastKey::Network {
                    name: r.name.clone(),
                    rank,
                }
            }
            Broadcast::Grant(g) => {
                let subject = (g.network.clone(), g.block);
                if shared
                    .seen_grants
                    .get(&subject)
                    .is_some_and(|old| *old >= g.rank())
                {
                    return Ok(None);
                }
                if !g.verify(&shared.ca_key) {
                    shared.bad_signatures += 1;
                    return Err(crate::DecodeError::Signature(g.admitter));
                }
                if shared.seen_grants.len() >= crate::ipam::MAX_GRANTS
                    && !shared.seen_grants.contains_key(&subject)
                {
                    return Ok(None);
                }
                shared.seen_grants.insert(subject, g.rank());
                BroadcastKey::Grant {
                    network: g.network.clone(),
                    block: g.block,
                    rank: g.rank(),
                }
            }
        };
        shared.inbox.push(item);
        Ok(Some(key))
    }
}
