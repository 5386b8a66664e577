//! IPv6 Neighbour Solicitation and Advertisement (RFC 4861 §4.3, §4.4): the IPv6 counterpart of ARP, answered
//! from the neighbour table by [`crate::engine::suppress`].
//!
//! Only the shape Linux and every common stack send is recognised: an IPv6 header directly followed by ICMPv6
//! (no extension headers), type 135 or 136, code 0. [`NdRepr::parse`] applies RFC 4861 §7.1.1/§7.1.2's
//! validity checks: hop limit 255 (the message did not cross a router), a correct ICMPv6 checksum over the
//! pseudo-header (RFC 8200 §8.1), at least 24 ICMPv6 bytes, a non-multicast target, options of non-zero
//! length inside the message, no source link-layer option in a solicitation from the unspecified address
//! (duplicate address detection, which must go to a solicited-node group), and no Solicited flag in an
//! advertisement to a multicast group. Anything else is an error; the caller forwards such frames untouched.
//!
//! Bytes past the IPv6 payload length (Ethernet padding) are ignored. Nothing here allocates.

use super::ethernet::{MacAddr, ETHERNET_HEADER_LEN, ETHERTYPE_IPV6};
use super::WireError;
use crate::offload::checksum::{checksum, fold, pseudo_header_v6, sum};
use std::net::Ipv6Addr;

pub const IPV6_HEADER_LEN: usize = 40;
/// Next header value of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// RFC 4861 §7.1: every ND message is sent, and must arrive, with hop limit 255.
pub const ND_HOP_LIMIT: u8 = 255;
pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// Type, code, checksum, reserved/flags, target address.
pub const ND_FIXED_LEN: usize = 24;
/// Option types (RFC 4861 §4.6.1).
pub const ND_OPT_SOURCE_LLADDR: u8 = 1;
pub const ND_OPT_TARGET_LLADDR: u8 = 2;
/// A link-layer address option for Ethernet: type, length 1 (× 8 bytes), 6-byte MAC.
pub const ND_OPT_LLADDR_LEN: usize = 8;
/// NA flags in the first byte after the checksum (RFC 4861 §4.4).
pub const NA_FLAG_ROUTER: u8 = 0x80;
pub const NA_FLAG_SOLICITED: u8 = 0x40;
pub const NA_FLAG_OVERRIDE: u8 = 0x20;
/// An NS or NA with one link-layer option, as an IPv6 packet.
pub const ND_PACKET_LEN: usize = IPV6_HEADER_LEN + ND_FIXED_LEN + ND_OPT_LLADDR_LEN;
/// The same inside an Ethernet frame: the size of every frame [`NdRepr::emit_frame`] writes (with an option).
pub const ND_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ND_PACKET_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdKind {
    /// Neighbour Solicitation: who has `target`?
    Solicit,
    /// Neighbour Advertisement for `target`, with its flags.
    Advert {
        router: bool,
        solicited: bool,
        override_: bool,
    },
}

/// A parsed NS or NA with the addresses of its IPv6 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdRepr {
    pub kind: NdKind,
    /// IPv6 source: the soliciting host (unspecified `::` during duplicate address detection), or the
    /// advertising one.
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The source link-layer address option of an NS, the target link-layer address option of an NA (the
    /// first such option; other options are skipped).
    pub lladdr: Option<MacAddr>,
}

/// Cheap pre-check on an IPv6 packet (an Ethernet payload): does it look like an NS or NA (no extension
/// headers)? [`NdRepr::parse`] validates the rest. Two byte compares, for the TAP fast path.
#[inline]
pub fn is_nd_candidate(ip: &[u8]) -> bool {
    ip.len() > IPV6_HEADER_LEN
        && ip[6] == IPPROTO_ICMPV6
        && matches!(
            ip[IPV6_HEADER_LEN],
            ICMPV6_NEIGHBOR_SOLICIT | ICMPV6_NEIGHBOR_ADVERT
        )
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// `ff02::1:ffXX:XXXX` (RFC 4291 §2.7.1).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn is_solicited_node_group(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

impl NdRepr {
    /// Parse an IPv6 packet (the payload of an Ethernet frame with EtherType 0x86dd).
    pub fn parse(ip: &[u8]) -> Result<NdRepr, WireError> {
        if ip.len() < IPV6_HEADER_LEN {
            return Err(WireError::Truncated {
                need: IPV6_HEADER_LEN,
                have: ip.len(),
            });
        }
        if ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
            return Err(WireError::NotNeighbor);
        }
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let need = IPV6_HEADER_LEN + plen;
        let icmp = ip
            .get(IPV6_HEADER_LEN..need)
            .ok_or(WireError::Truncated { need, have: ip.len() })?;
        let ty = *icmp.first().ok_or(WireError::NotNeighbor)?;
        if ty != ICMPV6_NEIGHBOR_SOLICIT && ty != ICMPV6_NEIGHBOR_ADVERT {
            return Err(WireError::NotNeighbor);
        }
        if ip[7] != ND_HOP_LIMIT {
            return Err(WireError::NdHopLimit(ip[7]));
        }
        if icmp.len() < ND_FIXED_LEN {
            return Err(WireError::NdInvalid("shorter than 24 ICMPv6 bytes"));
        }
        if icmp[1] != 0 {
            return Err(WireError::NdInvalid("ICMPv6 code is not 0"));
        }
        let src = addr(&ip[8..24]);
        let dst = addr(&ip[24..40]);
        // `icmp.len()` is at most 65535 (it came from a u16).
        let pseudo = pseudo_header_v6(src.octets(), dst.octets(), IPPROTO_ICMPV6, plen as u32);
        if fold(sum(icmp, pseudo)) != 0xffff {
            return Err(WireError::Icmpv6Checksum);
        }
        if src.is_multicast() {
            // RFC 4291 §2.7: a multicast address is never a source.
            return Err(WireError::NdInvalid("multicast source address"));
        }
        let target = addr(&icmp[8..24]);
        if target.is_multicast() {
            return Err(WireError::NdInvalid("multicast target address"));
        }
        let want = if ty == ICMPV6_NEIGHBOR_SOLICIT {
            ND_OPT_SOURCE_LLADDR
        } else {
            ND_OPT_TARGET_LLADDR
        };
        let mut lladdr = None;
        let mut opts = &icmp[ND_FIXED_LEN..];
        while let [t, l, ..] = *opts {
            let olen = usize::from(l) * 8;
            if olen == 0 {
                return Err(WireError::NdInvalid("option of length 0"));
            }
            let Some(o) = opts.get(..olen) else {
                return Err(WireError::NdInvalid("option runs past the message"));
            };
            if t == want && lladdr.is_none() {
                lladdr = MacAddr::from_slice(&o[2..]);
            }
            opts = &opts[olen..];
        }
        if opts.len() == 1 {
            return Err(WireError::NdInvalid("option runs past the message"));
        }
        let kind = if ty == ICMPV6_NEIGHBOR_SOLICIT {
            if src.is_unspecified() && (!is_solicited_node_group(&dst) || lladdr.is_some()) {
                return Err(WireError::NdInvalid(
                    "solicitation from :: must go to a solicited-node group without a source link-layer option",
                ));
            }
            NdKind::Solicit
        } else {
            let f = icmp[4];
            let solicited = f & NA_FLAG_SOLICITED != 0;
            if solicited && dst.is_multicast() {
                return Err(WireError::NdInvalid(
                    "solicited advertisement to a multicast group",
                ));
            }
            NdKind::Advert {
                router: f & NA_FLAG_ROUTER != 0,
                solicited,
                override_: f & NA_FLAG_OVERRIDE != 0,
            }
        };
        Ok(NdRepr {
            kind,
            src,
            dst,
            target,
            lladdr,
        })
    }

    /// Length of the IPv6 packet [`NdRepr::emit`] writes.
    pub fn packet_len(&self) -> usize {
        IPV6_HEADER_LEN
            + ND_FIXED_LEN
            + if self.lladdr.is_some() {
                ND_OPT_LLADDR_LEN
            } else {
                0
            }
    }

    /// Write the IPv6 packet (header with hop limit 255, ICMPv6 with a correct checksum, the link-layer option
    /// if `lladdr` is set) into the front of `buf`; returns its length, `None` if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.packet_len();
        let b = buf.get_mut(..len)?;
        b.fill(0);
        let plen = len - IPV6_HEADER_LEN;
        b[0] = 0x60;
        // `plen` is 24 or 32.
        b[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        b[6] = IPPROTO_ICMPV6;
        b[7] = ND_HOP_LIMIT;
        b[8..24].copy_from_slice(&self.src.octets());
        b[24..40].copy_from_slice(&self.dst.octets());
        let icmp = &mut b[IPV6_HEADER_LEN..];
        let opt = match self.kind {
            NdKind::Solicit => {
                icmp[0] = ICMPV6_NEIGHBOR_SOLICIT;
                ND_OPT_SOURCE_LLADDR
            }
            NdKind::Advert {
                router,
                solicited,
                override_,
            } => {
                icmp[0] = ICMPV6_NEIGHBOR_ADVERT;
                let flag = |on: bool, f: u8| if on { f } else { 0 };
                icmp[4] = flag(router, NA_FLAG_ROUTER)
                    | flag(solicited, NA_FLAG_SOLICITED)
                    | flag(override_, NA_FLAG_OVERRIDE);
                ND_OPT_TARGET_LLADDR
            }
        };
        icmp[8..24].copy_from_slice(&self.target.octets());
        if let Some(mac) = self.lladdr {
            icmp[24] = opt;
            icmp[25] = 1;
            icmp[26..32].copy_from_slice(&mac.0);
        }
        let pseudo = pseudo_header_v6(self.src.octets(), self.dst.octets(), IPPROTO_ICMPV6, plen as u32);
        let c = checksum(icmp, pseudo);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        Some(len)
    }

    /// Write a whole Ethernet frame (`eth_dst`, `eth_src`, EtherType IPv6, this packet) into `buf`; returns
    /// its length, `None` if `buf` is shorter.
    pub fn emit_frame(&self, eth_dst: MacAddr, eth_src: MacAddr, buf: &mut [u8]) -> Option<usize> {
        let len = ETHERNET_HEADER_LEN + self.packet_len();
        let f = buf.get_mut(..len)?;
        f[0..6].copy_from_slice(&eth_dst.0);
        f[6..12].copy_from_slice(&eth_src.0);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        self.emit(&mut f[ETHERNET_HEADER_LEN..])?;
        Some(len)
    }

    /// The advertisement the owner of this solicitation's target, at `mac`, would answer with: from the
    /// target address to the solicitor, Solicited and Override set (as Linux's bridge neighbour suppression
    /// does: the binding is the owner's own address, not a proxy's), Router clear, with a target link-layer
    /// option. Only meaningful for an [`NdKind::Solicit`] whose `src` is not unspecified.
    pub fn advert_for(&self, mac: MacAddr) -> NdRepr {
        NdRepr {
            kind: NdKind::Advert {
                router: false,
                solicited: true,
                override_: true,
            },
            src: self.target,
            dst: self.src,
            target: self.target,
            lladdr: Some(mac),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::EthernetFrame;
    use proptest::prelude::*;

    /// `ping -6 fd00:20::6` from fd00:20::5 (02:aa:00:00:00:01) over a veth pair, captured with
    /// `tcpdump -xx` on Linux 6.x: the solicitation to the solicited-node group…
    pub(crate) const LINUX_NS: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x06, 0x02, 0xaa, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, //
        0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfd, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x00, 0x01, 0xff, 0x00, 0x00, 0x06, 0x87, 0x00, 0x7c, 0xa1, 0x00, 0x00, 0x00, 0x00, 0xfd,
        0x00, //
        0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x01,
        0x01, //
        0x02, 0xaa, 0x00, 0x00, 0x00, 0x01,
    ];
    /// …and the advertisement of fd00:20::6 (02:bb:00:00:00:02): Solicited and Override set.
    pub(crate) const LINUX_NA: [u8; 86] = [
        0x02, 0xaa, 0x00, 0x00, 0x00, 0x01, 0x02, 0xbb, 0x00, 0x00, 0x00, 0x02, 0x86, 0xdd, 0x60,
        0x00, //
        0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfd, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0xfd, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x88, 0x00, 0x1b, 0x73, 0x60, 0x00, 0x00, 0x00, 0xfd,
        0x00, //
        0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x02,
        0x01, //
        0x02, 0xbb, 0x00, 0x00, 0x00, 0x02,
    ];
    const A: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 2]);

    fn ip(frame: &[u8]) -> &[u8] {
        &frame[ETHERNET_HEADER_LEN..]
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_linux_solicitation_and_advertisement() {
        assert!(is_nd_candidate(ip(&LINUX_NS)) && is_nd_candidate(ip(&LINUX_NA)));
        let ns = NdRepr::parse(ip(&LINUX_NS)).unwrap();
        assert_eq!(
            ns,
            NdRepr {
                kind: NdKind::Solicit,
                src: v6("fd00:20::5"),
                dst: v6("ff02::1:ff00:6"),
                target: v6("fd00:20::6"),
                lladdr: Some(A),
            }
        );
        assert_eq!(solicited_node(&ns.target), ns.dst);
        let na = NdRepr::parse(ip(&LINUX_NA)).unwrap();
        assert_eq!(
            na,
            NdRepr {
                kind: NdKind::Advert {
                    router: false,
                    solicited: true,
                    override_: true
                },
                src: v6("fd00:20::6"),
                dst: v6("fd00:20::5"),
                target: v6("fd00:20::6"),
                lladdr: Some(B),
            }
        );
    }

    #[test]
    fn advert_for_linux_solicitation_is_byte_identical_to_linux_advert() {
        let ns = NdRepr::parse(ip(&LINUX_NS)).unwrap();
        let mut buf = [0u8; 128];
        let n = ns.advert_for(B).emit_frame(A, B, &mut buf).unwrap();
        assert_eq!(n, ND_FRAME_LEN);
        assert_eq!(buf[..n], LINUX_NA);
        // And re-emitting the solicitation reproduces its capture, checksum included.
        let n = ns
            .emit_frame(MacAddr([0x33, 0x33, 0xff, 0, 0, 6]), A, &mut buf)
            .unwrap();
        assert_eq!(buf[..n], LINUX_NS);
        assert_eq!(ns.emit_frame(A, B, &mut buf[..85]), None);
    }

    #[test]
    fn etherparse_agrees() {
        for (frame, ty) in [
            (&LINUX_NS, ICMPV6_NEIGHBOR_SOLICIT),
            (&LINUX_NA, ICMPV6_NEIGHBOR_ADVERT),
        ] {
            let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
            let Some(etherparse::NetSlice::Ipv6(h)) = &p.net else {
                panic!("not IPv6")
            };
            let (src, dst) = (h.header().source(), h.header().destination());
            let Some(etherparse::TransportSlice::Icmpv6(i)) = p.transport else {
                panic!("not ICMPv6")
            };
            assert_eq!(i.type_u8(), ty);
            assert!(i.is_checksum_valid(src, dst));
        }
    }

    #[test]
    fn validity_checks_of_rfc_4861() {
        let ns = NdRepr::parse(ip(&LINUX_NS)).unwrap();
        let mut f = LINUX_NS;
        f[21] = 64; // hop limit
        assert_eq!(NdRepr::parse(ip(&f)), Err(WireError::NdHopLimit(64)));
        let mut f = LINUX_NS;
        f[57] ^= 1; // checksum
        assert_eq!(NdRepr::parse(ip(&f)), Err(WireError::Icmpv6Checksum));
        let mut f = LINUX_NS;
        f[20] = 17; // UDP
        assert_eq!(NdRepr::parse(ip(&f)), Err(WireError::NotNeighbor));
        let mut f = LINUX_NS;
        f[54] = 128; // echo request
        assert_eq!(NdRepr::parse(ip(&f)), Err(WireError::NotNeighbor));
        assert!(matches!(
            NdRepr::parse(&ip(&LINUX_NS)[..71]),
            Err(WireError::Truncated { need: 72, have: 71 })
        ));
        // Ethernet padding past the payload length is ignored.
        let mut padded = [0u8; 100];
        padded[..86].copy_from_slice(&LINUX_NS);
        assert_eq!(NdRepr::parse(ip(&padded)), Ok(ns));

        // Built ones (valid checksum) that break one rule each.
        let mut buf = [0u8; 128];
        let bad = |r: NdRepr, buf: &mut [u8; 128]| {
            let n = r.emit(buf).unwrap();
            NdRepr::parse(&buf[..n])
        };
        let multicast_target = NdRepr {
            target: v6("ff02::1"),
            ..ns
        };
        assert!(matches!(
            bad(multicast_target, &mut buf),
            Err(WireError::NdInvalid(_))
        ));
        let dad_with_slla = NdRepr {
            src: Ipv6Addr::UNSPECIFIED,
            ..ns
        };
        assert!(matches!(
            bad(dad_with_slla, &mut buf),
            Err(WireError::NdInvalid(_))
        ));
        let dad_unicast = NdRepr {
            src: Ipv6Addr::UNSPECIFIED,
            dst: v6("fd00:20::6"),
            lladdr: None,
            ..ns
        };
        assert!(matches!(bad(dad_unicast, &mut buf), Err(WireError::NdInvalid(_))));
        let dad = NdRepr {
            src: Ipv6Addr::UNSPECIFIED,
            lladdr: None,
            ..ns
        };
        assert_eq!(bad(dad, &mut buf), Ok(dad));
        let solicited_to_group = NdRepr {
            dst: v6("ff02::1"),
            ..ns.advert_for(B)
        };
        assert!(matches!(
            bad(solicited_to_group, &mut buf),
            Err(WireError::NdInvalid(_))
        ));
        let unsolicited = NdRepr {
            kind: NdKind::Advert {
                router: true,
                solicited: false,
                override_: true,
            },
            ..solicited_to_group
        };
        assert_eq!(bad(unsolicited, &mut buf), Ok(unsolicited));
    }

    /// Fix the ICMPv6 checksum of an emitted packet after editing it.
    fn rechecksum(p: &mut [u8]) {
        let plen = p.len() - IPV6_HEADER_LEN;
        let (h, icmp) = p.split_at_mut(IPV6_HEADER_LEN);
        icmp[2..4].fill(0);
        let pseudo = pseudo_header_v6(addr(&h[8..]).octets(), addr(&h[24..]).octets(), 58, plen as u32);
        let c = checksum(icmp, pseudo);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn options_are_walked_and_checked() {
        let ns = NdRepr::parse(ip(&LINUX_NS)).unwrap();
        let mut buf = [0u8; 128];
        // A nonce option (type 14, 8 bytes) before the SLLA: skipped, SLLA still found.
        let n = NdRepr { lladdr: None, ..ns }.emit(&mut buf).unwrap();
        buf[n..n + 8].copy_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        buf[n + 8..n + 16].copy_from_slice(&[1, 1, 2, 0, 0, 0, 0, 9]);
        buf[5] = 40;
        rechecksum(&mut buf[..n + 16]);
        let r = NdRepr::parse(&buf[..n + 16]).unwrap();
        assert_eq!(r.lladdr, Some(MacAddr([2, 0, 0, 0, 0, 9])));
        // A zero-length option is invalid (RFC 4861 §4.6), as is one running past the end or a lone byte.
        buf[n + 9] = 0;
        rechecksum(&mut buf[..n + 16]);
        assert_eq!(
            NdRepr::parse(&buf[..n + 16]),
            Err(WireError::NdInvalid("option of length 0"))
        );
        buf[n + 9] = 2;
        rechecksum(&mut buf[..n + 16]);
        assert!(matches!(
            NdRepr::parse(&buf[..n + 16]),
            Err(WireError::NdInvalid(_))
        ));
        buf[5] = 33;
        rechecksum(&mut buf[..n + 9]);
        assert!(matches!(
            NdRepr::parse(&buf[..n + 9]),
            Err(WireError::NdInvalid(_))
        ));
    }

    fn ns_strategy() -> impl Strategy<Value = NdRepr> {
        (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<Option<[u8; 6]>>()).prop_map(|(s, t, l)| {
            let (mut s, mut t) = (s, t);
            s[0] &= 0xfe; // not ff00::/8
            t[0] &= 0xfe;
            let target = Ipv6Addr::from(t);
            NdRepr {
                kind: NdKind::Solicit,
                src: Ipv6Addr::from(s),
                dst: solicited_node(&target),
                target,
                lladdr: if Ipv6Addr::from(s).is_unspecified() {
                    None
                } else {
                    l.map(MacAddr)
                },
            }
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = is_nd_candidate(&b);
            if let Ok(r) = NdRepr::parse(&b) {
                let mut out = [0u8; 128];
                let n = r.emit(&mut out).unwrap();
                prop_assert_eq!(NdRepr::parse(&out[..n]), Ok(r));
            }
        }

        #[test]
        fn truncation_and_flips_never_panic(cut in 0usize..86, i in 0usize..86, x in any::<u8>()) {
            for base in [LINUX_NS, LINUX_NA] {
                let mut f = base;
                f[i] ^= x;
                let _ = NdRepr::parse(&ip(&f)[..cut.saturating_sub(ETHERNET_HEADER_LEN)]);
                let _ = NdRepr::parse(ip(&f));
            }
        }

        #[test]
        fn advert_round_trips_with_valid_checksum(ns in ns_strategy(), mac in any::<[u8; 6]>(), req in any::<[u8; 6]>()) {
            let mut buf = [0u8; 128];
            let n = ns.emit(&mut buf).unwrap();
            prop_assert_eq!(NdRepr::parse(&buf[..n]), Ok(ns));
            let na = ns.advert_for(MacAddr(mac));
            let n = na.emit_frame(MacAddr(req), MacAddr(mac), &mut buf).unwrap();
            prop_assert_eq!(n, ND_FRAME_LEN);
            let e = EthernetFrame::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!((e.dst(), e.src(), e.ethertype()), (MacAddr(req), MacAddr(mac), ETHERTYPE_IPV6));
            let got = NdRepr::parse(e.payload()).unwrap();
            prop_assert_eq!(got, na);
            prop_assert_eq!((got.target, got.lladdr), (ns.target, Some(MacAddr(mac))));
            let p = etherparse::SlicedPacket::from_ethernet(&buf[..n]).unwrap();
            let Some(etherparse::TransportSlice::Icmpv6(i)) = p.transport else { panic!("not ICMPv6") };
            prop_assert!(i.is_checksum_valid(ns.target.octets(), ns.src.octets()));
        }
    }
}
