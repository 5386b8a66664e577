//! Membership glue around foca (SWIM): the cluster identity type, a seeded RNG, the runtime adapter that
//! turns foca's callbacks into [`Output`]s, and the custom-broadcast handler that carries FDB adverts.
//!
//! Owns: how a node is named on the wire and which of two identities of the same address wins (the newer
//! generation, then the newer renewal). Must never: do I/O, read a clock, or decide FDB winners (that is
//! [`crate::sync`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{BroadcastHandler, Invalidates, Notification, OwnedNotification, Runtime};
use serde::{Deserialize, Serialize};

use crate::messages::{self, Broadcast};
use crate::{MacAddr, Output, Timer, TimerKind};

/// Stable node identifier (derived from the node credential; constant across restarts).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A member as SWIM sees it. foca keys members by [`foca::Identity::addr`] (the gossip address) so a
/// joiner can announce itself to an address without knowing who listens there; two identities with the
/// same address are the same node at different times and the newer (generation, renewal) wins.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub vtep: IpAddr,
    /// One per daemon start (the daemon uses wall-clock milliseconds at start or a persisted counter);
    /// anything about an older generation of the same node is ignored.
    pub generation: u64,
    /// Bumped by [`foca::Identity::renew`] when this run was wrongly declared down; not a new generation:
    /// the FDB state of the run is unchanged.
    pub renewal: u32,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/g{}.{}",
            self.id, self.addr, self.generation, self.renewal
        )
    }
}

impl NodeIdentity {
    /// Placeholder for "whoever listens at `addr`", used only as the destination of a join announce:
    /// foca accepts an Announce whose destination has the receiver's address.
    pub(crate) fn placeholder(addr: SocketAddr) -> Self {
        NodeIdentity {
            id: NodeId(0),
            addr,
            vtep: IpAddr::from([0, 0, 0, 0]),
            generation: 0,
            renewal: 0,
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            renewal: self.renewal.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.renewal, self.id) > (adversary.generation, adversary.renewal, adversary.id)
    }
}

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
/// node: the newest version seen per (owner, MAC) and per leaving address, and items accepted but not
/// yet applied by the node.
#[derive(Debug, Default)]
pub(crate) struct BroadcastShared {
    pub seen: HashMap<(NodeId, MacAddr), (u64, u64)>,
    pub seen_leaves: HashMap<SocketAddr, (u64, u32)>,
    pub inbox: Vec<Broadcast>,
}

/// foca custom-broadcast handler: keeps disseminating an item only while it is the newest known for
/// its subject ((owner, MAC) for adverts, address for leaves).
#[derive(Debug, Clone)]
pub(crate) struct FdbBroadcasts {
    pub shared: Arc<Mutex<BroadcastShared>>,
}

/// Dissemination key: a newer version for the same subject replaces an older one in foca's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BroadcastKey {
    Fdb {
        owner: NodeId,
        mac: MacAddr,
        version: (u64, u64),
    },
    Leave {
        addr: SocketAddr,
        version: (u64, u32),
    },
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                BroadcastKey::Fdb { owner, mac, version },
                BroadcastKey::Fdb {
                    owner: o,
                    mac: m,
                    version: v,
                },
            ) => owner == o && mac == m && version >= v,
            (BroadcastKey::Leave { addr, version }, BroadcastKey::Leave { addr: a, version: v }) => {
                addr == a && version >= v
            }
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
                let mac = MacAddr(advert.mac);
                let version = (advert.generation, advert.seq);
                let subject = (advert.owner, mac);
                if shared.seen.get(&subject).is_some_and(|&old| old >= version) {
                    return Ok(None);
                }
                shared.seen.insert(subject, version);
                BroadcastKey::Fdb {
                    owner: advert.owner,
                    mac,
                    version,
                }
            }
            Broadcast::Leave(id) => {
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
        };
        shared.inbox.push(item);
        Ok(Some(key))
    }
}
