//! Path MTU discovery for the containers (issue 9 §3): a frame from the TAP that is too big for the path to
//! its VTEP is answered, on the TAP, with ICMP "fragmentation needed" (IPv4) or ICMPv6 "packet too big",
//! addressed to the inner sender, so its kernel lowers its PMTU cache for that destination.
//!
//! This matches what Linux does for bridged VXLAN since 5.9 (`skb_tunnel_check_pmtu` and
//! `iptunnel_pmtud_build_icmp{,v6}` in net/ipv4/ip_tunnel_core.c): the reply comes "from" the inner
//! destination (Ethernet and IP addresses swapped), keeps the original TTL / hop limit, quotes the original
//! packet up to 576 bytes (IPv4) or 1280 bytes (IPv6) of reply, and is not sent when the original is itself
//! an ICMP error, has no DF bit (IPv4), or comes from an unspecified/multicast/loopback source, or when the
//! MTU is below the protocol minimum (576 / 1280). Pure byte work: no I/O, no allocation, never panics.

use crate::offload::checksum;
use crate::wire::{EthernetFrame, ETHERNET_HEADER_LEN};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const ICMP_HLEN: usize = 8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPV4_DF: u16 = 0x4000;
/// RFC 1812 §4.3.2.3 / Linux: an IPv4 ICMP error is at most 576 bytes.
const IPV4_ICMP_MAX: usize = 576;
/// RFC 8200 §5 minimum MTU; an ICMPv6 error is at most this long (RFC 4443 §2.4 (c)).
const IPV6_MIN_MTU: usize = 1280;
/// Largest reply [`reply`] writes: Ethernet + 1280-byte ICMPv6 packet.
pub const MAX_REPLY_LEN: usize = ETHERNET_HEADER_LEN + IPV6_MIN_MTU;

/// Whether the Ethernet `frame` (without virtio header) is too big for an inner MTU of `inner_mtu` bytes of
/// IP packet (path MTU minus VXLAN overhead): its payload after the Ethernet header is longer.
pub fn exceeds(frame: &[u8], inner_mtu: usize) -> bool {
    frame.len().saturating_sub(ETHERNET_HEADER_LEN) > inner_mtu
}

/// Write into `out` the Ethernet frame that tells the sender of `frame` its packet does not fit an inner
/// MTU of `mtu` bytes. Returns the reply's length, or `None` when no reply is due (see the module comment)
/// or `frame` is not a well-formed IPv4/IPv6 packet, or `out` is shorter than the reply.
pub fn reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    // The reply comes from the frame's destination MAC: a group address cannot be a source.
    if eth.dst().is_multicast() {
        return None;
    }
    match eth.ethertype() {
        ETHERTYPE_IPV4 => reply_v4(&eth, mtu, out),
        ETHERTYPE_IPV6 => reply_v6(&eth, mtu, out),
        _ => None,
    }
}

fn write_eth(eth: &EthernetFrame<&[u8]>, ethertype: u16, out: &mut [u8]) -> Option<()> {
    out.get_mut(0..6)?.copy_from_slice(&eth.src().0);
    out.get_mut(6..12)?.copy_from_slice(&eth.dst().0);
    out.get_mut(12..14)?.copy_from_slice(&ethertype.to_be_bytes());
    Some(())
}

fn reply_v4(eth: &EthernetFrame<&[u8]>, mtu: u32, out: &mut [u8]) -> Option<usize> {
    let ip = eth.payload();
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_MIN_HLEN || ip.len() < ihl {
        return None;
    }
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    if frag & IPV4_DF == 0 || mtu < IPV4_ICMP_MAX as u32 {
        return None;
    }
    let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
    let s = std::net::Ipv4Addr::from(src);
    if s.is_unspecified() || s.is_multicast() || s.is_broadcast() || s.is_loopback() {
        return None;
    }
    // Never answer an ICMP error with one (RFC 1122 §3.2.2); only a first fragment carries the ICMP type.
    if ip.get(9) == Some(&IPPROTO_ICMP) && frag & 0x1fff == 0 {
        if let Some(t) = ip.get(ihl) {
            if !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
                return None;
            }
        }
    }
    // The original IP packet as its length field says (Ethernet padding excluded), cut to fit 576 bytes.
    let tot = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])).clamp(ihl, ip.len());
    let quoted = tot.min(IPV4_ICMP_MAX - IPV4_MIN_HLEN - ICMP_HLEN);
    let icmp_len = ICMP_HLEN + quoted;
    let ip_len = IPV4_MIN_HLEN + icmp_len;
    let len = ETHERNET_HEADER_LEN + ip_len;
    let out = out.get_mut(..len)?;
    write_eth(eth, ETHERTYPE_IPV4, out)?;
    let (iph, icmp) = out.get_mut(ETHERNET_HEADER_LEN..)?.split_at_mut(IPV4_MIN_HLEN);
    let next_hop = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
    icmp.get_mut(..ICMP_HLEN)?
        .copy_from_slice(&[3, 4, 0, 0, 0, 0, next_hop[0], next_hop[1]]);
    icmp.get_mut(ICMP_HLEN..)?.copy_from_slice(ip.get(..quoted)?);
    let c = checksum::checksum(icmp, 0).to_be_bytes();
    icmp.get_mut(2..4)?.copy_from_slice(&c);
    let total = (ip_len as u16).to_be_bytes();
    let ttl = *ip.get(8)?;
    iph.copy_from_slice(&[
        0x45,
        0,
        total[0],
        total[1],
        0,
        0,
        0x40,
        0,
        ttl,
        IPPROTO_ICMP,
        0,
        0,
        dst[0],
        dst[1],
        dst[2],
        dst[3],
        src[0],
        src[1],
        src[2],
        src[3],
    ]);
    let c = checksum::checksum(iph, 0).to_be_bytes();
    iph.get_mut(10..12)?.copy_from_slice(&c);
    Some(len)
}

fn reply_v6(eth: &EthernetFrame<&[u8]>, mtu: u32, out: &mut [u8]) -> Option<usize> {
    let ip = eth.payload();
    if ip.first()? >> 4 != 6 || ip.len() < IPV6_HLEN || mtu < IPV6_MIN_MTU as u32 {
        return None;
    }
    let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
    let s = std::net::Ipv6Addr::from(src);
    if s.is_unspecified() || s.is_multicast() || s.is_loopback() {
        return None;
    }
    // An ICMPv6 error (type < 128) directly after the fixed header is never answered (RFC 4443 §2.4 (e)).
    if ip.get(6) == Some(&IPPROTO_ICMPV6) && ip.get(IPV6_HLEN).is_some_and(|t| *t < 128) {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
    let tot = (IPV6_HLEN + plen).min(ip.len());
    let quoted = tot.min(IPV6_MIN_MTU - IPV6_HLEN - ICMP_HLEN);
    let icmp_len = ICMP_HLEN + quoted;
    let len = ETHERNET_HEADER_LEN + IPV6_HLEN + icmp_len;
    let out = out.get_mut(..len)?;
    write_eth(eth, ETHERTYPE_IPV6, out)?;
    let (iph, icmp) = out.get_mut(ETHERNET_HEADER_LEN..)?.split_at_mut(IPV6_HLEN);
    let m = mtu.to_be_bytes();
    icmp.get_mut(..ICMP_HLEN)?
        .copy_from_slice(&[2, 0, 0, 0, m[0], m[1], m[2], m[3]]);
    icmp.get_mut(ICMP_HLEN..)?.copy_from_slice(ip.get(..quoted)?);
    let pseudo = checksum::pseudo_header_v6(dst, src, IPPROTO_ICMPV6, icmp_len as u32);
    let c = checksum::checksum(icmp, pseudo).to_be_bytes();
    icmp.get_mut(2..4)?.copy_from_slice(&c);
    let pl = (icmp_len as u16).to_be_bytes();
    let hop = *ip.get(7)?;
    iph.get_mut(..8)?
        .copy_from_slice(&[0x60, 0, 0, 0, pl[0], pl[1], IPPROTO_ICMPV6, hop]);
    iph.get_mut(8..24)?.copy_from_slice(&dst);
    iph.get_mut(24..40)?.copy_from_slice(&src);
    Some(len)
}

#[cfg(test)]
mod tests;
