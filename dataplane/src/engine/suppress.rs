//! ARP/ND suppression (issue 10 §4): ARP requests and IPv6 neighbour solicitations that local containers send
//! into the TAP are answered here from the network's [`NeighTable`] instead of being flooded over the underlay.
//! Pure: a frame, the network's view and a caller-owned reply buffer in, a [`Decision`] out. No clock, no I/O,
//! no allocation; [`suppress`] also bumps the two counters.
//!
//! For one frame read from the TAP ([`decide`]):
//! - source MAC = the bridge's own MAC → `Drop(BridgeMac)`: per DECISIONS ("Networks and IPAM") the bridge's
//!   own frames (the anycast gateway's ARP/ND above all) never enter the tunnel. Counted by the caller as the
//!   drop reason `bridge_mac` ([`Dropped::reason`]).
//! - ARP request or NS for the network's gateway address → `Drop(Gateway)`: the local bridge answers it.
//! - ARP request or NS for an address bound on our own bridge (`local`) → `Drop(LocalBinding)`: the container
//!   answers itself over the bridge; the copy in the TAP has nowhere useful to go.
//! - ARP request or NS for an address bound on another host (`control`) → `Reply(n)`: an ARP reply / a
//!   Neighbour Advertisement (Solicited, Override, target link-layer option) from the owner's MAC to the
//!   requester is in `reply[..n]`, to be written back into the TAP. Unicast requests (Linux's reachability
//!   re-checks) are answered too, so a known binding sends no ARP over the underlay at all.
//! - Everything else → `Forward` (flood or forward as usual): not ARP/ND (one EtherType compare, plus two byte
//!   compares for IPv6), ARP replies and NAs, malformed ARP/ND (the engine never looked at L3 before either),
//!   requests for an unknown address, gratuitous ARP (sender = target: never answered, only learned), ARP
//!   probes (sender 0.0.0.0) and duplicate address detection (NS from `::`).
//!
//! Every ARP request and NS from the TAP that is not malformed and not from the bridge MAC counts once: as
//! `arp_suppressed` (Reply, or Drop for gateway / local binding) or as `arp_flooded` (Forward).
//!
//! Learning: [`Decision::learn`] is the sender binding of a valid ARP request or reply (sender IP not 0.0.0.0),
//! of an NS (its source address and source link-layer option) or of an NA (its target and target link-layer
//! option), provided the link-layer address claimed equals the frame's Ethernet source (a binding we cannot
//! tie to the frame is not learned), the binding is valid ([`Binding::is_valid`]) and the address is not the
//! gateway. The caller records it with [`NeighTable::learn`] as a `local` binding.
//!
//! # How the TX path calls it (for the engine's `on_tap_frame`)
//! 1. Right after the Ethernet parse and before the FDB learns the source MAC as local:
//!    `if from_bridge(frame, net.bridge_mac) { return Err(DropReason::BridgeMac) }` — so the bridge MAC is
//!    never learned as local nor advertised (the anycast gateway would otherwise move between hosts).
//! 2. After the BUM rate-limit check (a flood of broadcast ARP is limited before it reaches the table) and
//!    before the FDB lookup (as [`crate::engine::Engine::on_tap`] does it, returning a
//!    [`crate::engine::TxVerdict`]; the worker writes a reply into the TAP):
//!    ```ignore
//!    let d = suppress::suppress(frame, &view, counters, &mut out.reply);
//!    if let Some(b) = d.learn { net.neigh.learn(b, now); }   // Insert::* needs no counting
//!    match d.verdict {
//!        Verdict::Forward => {}                               // continue: FDB lookup, else flood
//!        Verdict::Reply(n) => return Ok(TxVerdict::Reply(n)),  // the worker writes out.reply[..n] to the TAP
//!        Verdict::Drop(why) => return match why.reason() {
//!            Some(r) => Err(r),                               // bridge_mac (unreachable after step 1)
//!            None => Ok(TxVerdict::Consumed),                 // suppressed: not a drop, already counted
//!        },
//!    }
//!    ```
//!    `out.reply` is the loop's `[u8; REPLY_BUF_LEN]` in its reused `TxAction`. The reply is not counted in
//!    `tx_frames` by `suppress` (the caller decides; it is a frame written to the TAP).
//! 3. Control-plane glue: `FdbInstall { ips }` → [`NeighTable::install`] per address (and
//!    [`NeighTable::remove_control`] for addresses the advert no longer carries); `FdbRemove` →
//!    [`NeighTable::remove_control_mac`]; adverts of local MACs read [`NeighTable::local_ips_of`] (bounded)
//!    and are re-sent when [`NeighTable::local_version`] moves; a MAC leaving our bridge (the FDB forgets a
//!    local MAC) → [`NeighTable::remove_mac`]; `attach` → [`NeighTable::learn`] with the attached address.
//!    A network appearing after its entries arrived installs `GossipHandle::installed(vni)`'s addresses.

use crate::neigh::{Binding, NeighOrigin, NeighTable};
use crate::stats::{Counters, DropReason};
use crate::wire::arp::{ArpOp, ArpRepr};
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::wire::nd::{is_nd_candidate, NdKind, NdRepr, ND_FRAME_LEN};
use crate::wire::{EthernetFrame, MacAddr};
use std::net::IpAddr;

/// The reply buffer [`decide`] needs: the larger of an ARP reply (42 bytes) and an NA with its option (86).
pub const REPLY_BUF_LEN: usize = ND_FRAME_LEN;

/// What the suppressor knows about the frame's network.
#[derive(Clone, Copy, Debug)]
pub struct NetView<'a> {
    pub neigh: &'a NeighTable,
    /// The anycast gateway address (egress networks), if any.
    pub gateway: Option<IpAddr>,
    /// The MAC of the network's bridge, if known.
    pub bridge_mac: Option<MacAddr>,
}

/// Why a frame is kept out of the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// ARP request / NS for the gateway address (answered by the local bridge). Counted as `arp_suppressed`.
    Gateway,
    /// ARP request / NS for an address on our own bridge (the container answers). Counted as `arp_suppressed`.
    LocalBinding,
    /// A frame from the bridge's own MAC: a drop, reason `bridge_mac`.
    BridgeMac,
}

impl Dropped {
    /// The drop reason the caller counts, if this is a drop at all (suppressed requests are not).
    pub fn reason(self) -> Option<DropReason> {
        match self {
            Dropped::BridgeMac => Some(DropReason::BridgeMac),
            Dropped::Gateway | Dropped::LocalBinding => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write `reply[..n]` into the TAP; do not send the frame.
    Reply(usize),
    /// Do not send the frame.
    Drop(Dropped),
    /// Not for the suppressor: FDB lookup and forward or flood as usual.
    Forward,
}

/// Which counter a decision bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    Suppressed,
    Flooded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// A binding seen on our own bridge, to record with [`NeighTable::learn`].
    pub learn: Option<Binding>,
    pub tally: Option<Tally>,
}

impl Decision {
    const FORWARD: Decision = Decision {
        verdict: Verdict::Forward,
        learn: None,
        tally: None,
    };
}

/// Whether `frame` comes from the bridge's own MAC (one compare; false for a frame shorter than a header).
#[inline]
pub fn from_bridge(frame: &[u8], bridge_mac: Option<MacAddr>) -> bool {
    match (bridge_mac, frame.get(6..12)) {
        (Some(m), Some(src)) => src == m.0,
        _ => false,
    }
}

/// [`decide`], then count `arp_suppressed` / `arp_flooded` in `counters`.
#[inline]
pub fn suppress(frame: &[u8], net: &NetView<'_>, counters: &Counters, reply: &mut [u8]) -> Decision {
    let d = decide(frame, net, reply);
    match d.tally {
        Some(Tally::Suppressed) => Counters::add(&counters.arp_suppressed, 1),
        Some(Tally::Flooded) => Counters::add(&counters.arp_flooded, 1),
        None => {}
    }
    d
}

/// Decide what to do with one frame read from the TAP (see the module doc). A reply, if any, is written into
/// `reply` (at least [`REPLY_BUF_LEN`] bytes; with a shorter buffer requests are forwarded instead).
pub fn decide(frame: &[u8], net: &NetView<'_>, reply: &mut [u8]) -> Decision {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Decision::FORWARD;
    };
    if net.bridge_mac == Some(eth.src()) {
        return Decision {
            verdict: Verdict::Drop(Dropped::BridgeMac),
            ..Decision::FORWARD
        };
    }
    match eth.ethertype() {
        ETHERTYPE_ARP => match ArpRepr::parse(eth.payload()) {
            Ok(a) => on_arp(&a, eth.src(), net, reply),
            Err(_) => Decision::FORWARD,
        },
        ETHERTYPE_IPV6 if is_nd_candidate(eth.payload()) => match NdRepr::parse(eth.payload()) {
            Ok(n) => on_nd(&n, eth.src(), net, reply),
            Err(_) => Decision::FORWARD,
        },
        _ => Decision::FORWARD,
    }
}

/// The binding `(ip, mac)` if it may be learned from a frame sent by `eth_src`.
fn learnable(ip: IpAddr, mac: MacAddr, eth_src: MacAddr, net: &NetView<'_>) -> Option<Binding> {
    let b = Binding { ip, mac };
    (mac == eth_src && b.is_valid() && net.gateway != Some(ip)).then_some(b)
}

/// The verdict for a request (not for the gateway) for `target` from `requester`, answered by `answer` with the
/// owner's MAC when the binding is another host's.
fn on_request(
    target: IpAddr,
    requester: MacAddr,
    net: &NetView<'_>,
    answer: impl FnOnce(MacAddr) -> Option<usize>,
) -> (Verdict, Tally) {
    match net.neigh.lookup(&target) {
        Some((_, NeighOrigin::Local)) => (Verdict::Drop(Dropped::LocalBinding), Tally::Suppressed),
        // A requester asking for an address bound to its own MAC gets no answer from us.
        Some((mac, NeighOrigin::Control)) if mac != requester && requester.is_learnable() => {
            match answer(mac) {
                Some(n) => (Verdict::Reply(n), Tally::Suppressed),
                None => (Verdict::Forward, Tally::Flooded),
            }
        }
        _ => (Verdict::Forward, Tally::Flooded),
    }
}

fn on_arp(a: &ArpRepr, eth_src: MacAddr, net: &NetView<'_>, reply: &mut [u8]) -> Decision {
    let learn = if a.is_probe() {
        None
    } else {
        learnable(IpAddr::V4(a.sender_ip), a.sender_mac, eth_src, net)
    };
    if a.op != ArpOp::Request {
        return Decision {
            learn,
            ..Decision::FORWARD
        };
    }
    let target = IpAddr::V4(a.target_ip);
    let (verdict, tally) = if net.gateway == Some(target) {
        // Probes and announcements for the gateway too: the bridge owns that address on every host.
        (Verdict::Drop(Dropped::Gateway), Tally::Suppressed)
    } else if a.is_probe() || a.is_gratuitous() {
        (Verdict::Forward, Tally::Flooded)
    } else {
        on_request(target, a.sender_mac, net, |mac| a.emit_reply_frame(mac, reply))
    };
    Decision {
        verdict,
        learn,
        tally: Some(tally),
    }
}

fn on_nd(n: &NdRepr, eth_src: MacAddr, net: &NetView<'_>, reply: &mut [u8]) -> Decision {
    match n.kind {
        NdKind::Advert { .. } => Decision {
            learn: n
                .lladdr
                .and_then(|m| learnable(IpAddr::V6(n.target), m, eth_src, net)),
            ..Decision::FORWARD
        },
        NdKind::Solicit => {
            let target = IpAddr::V6(n.target);
            let dad = n.src.is_unspecified();
            let learn = if dad {
                None
            } else {
                n.lladdr
                    .and_then(|m| learnable(IpAddr::V6(n.src), m, eth_src, net))
            };
            // RFC 4861 §7.2.4: the advertisement goes to the solicitor's link-layer option, else to the frame's
            // source.
            let requester = n.lladdr.unwrap_or(eth_src);
            let (verdict, tally) = if net.gateway == Some(target) {
                (Verdict::Drop(Dropped::Gateway), Tally::Suppressed)
            } else if dad {
                (Verdict::Forward, Tally::Flooded)
            } else {
                on_request(target, requester, net, |mac| {
                    n.advert_for(mac).emit_frame(requester, mac, reply)
                })
            };
            Decision {
                verdict,
                learn,
                tally: Some(tally),
            }
        }
    }
}

#[cfg(test)]
mod tests;
