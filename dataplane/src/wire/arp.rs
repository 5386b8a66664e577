//! ARP (RFC 826) for Ethernet and IPv4: the only kind the overlay answers from its neighbour table
//! ([`crate::engine::suppress`]). Anything else with EtherType 0x0806 (other hardware or protocol types, other
//! operations such as RARP) is refused by [`ArpPacket::new_checked`] and forwarded untouched by the caller.
//!
//! Layout after the Ethernet header (28 bytes): `htype (2) | ptype (2) | hlen (1) | plen (1) | oper (2) |
//! sha (6) | spa (4) | tha (6) | tpa (4)`. Trailing bytes (Ethernet padding to 60 bytes) are ignored.

use super::ethernet::{MacAddr, ETHERNET_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use super::WireError;
use std::net::Ipv4Addr;

/// ARP body for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// An Ethernet frame carrying an ARP body (no padding).
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;
/// `ar_hrd` for Ethernet (RFC 826, IANA "Hardware Types").
pub const ARP_HTYPE_ETHERNET: u16 = 1;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

/// A checked view of an Ethernet/IPv4 ARP body (the Ethernet payload): at least [`ARP_LEN`] bytes, hardware
/// type Ethernet, protocol IPv4, address lengths 6 and 4, operation request or reply.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < ARP_LEN {
            return Err(WireError::Truncated {
                need: ARP_LEN,
                have: b.len(),
            });
        }
        if u16::from_be_bytes([b[0], b[1]]) != ARP_HTYPE_ETHERNET
            || u16::from_be_bytes([b[2], b[3]]) != ETHERTYPE_IPV4
            || b[4] != 6
            || b[5] != 4
        {
            return Err(WireError::NotArpEthIpv4);
        }
        let op = u16::from_be_bytes([b[6], b[7]]);
        if op != ARP_OP_REQUEST && op != ARP_OP_REPLY {
            return Err(WireError::ArpOp(op));
        }
        Ok(ArpPacket { buf })
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn op(&self) -> ArpOp {
        if self.b()[7] == 1 {
            ArpOp::Request
        } else {
            ArpOp::Reply
        }
    }
    fn mac_at(&self, i: usize) -> MacAddr {
        let b = self.b();
        MacAddr([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5]])
    }
    fn ip_at(&self, i: usize) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3])
    }
    pub fn sender_mac(&self) -> MacAddr {
        self.mac_at(8)
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip_at(14)
    }
    pub fn target_mac(&self) -> MacAddr {
        self.mac_at(18)
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip_at(24)
    }
}

/// A parsed Ethernet/IPv4 ARP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parse an ARP body (the payload of an Ethernet frame with EtherType 0x0806).
    pub fn parse(body: &[u8]) -> Result<ArpRepr, WireError> {
        let p = ArpPacket::new_checked(body)?;
        Ok(ArpRepr {
            op: p.op(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        })
    }

    /// A gratuitous ARP announces the sender's own address: sender and target IP are equal.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// An ARP probe (RFC 5227 §2.1.1) has sender IP 0.0.0.0: address conflict detection, never answered by
    /// a proxy and never learned from.
    pub fn is_probe(&self) -> bool {
        self.sender_ip.is_unspecified()
    }

    /// Write the 28-byte ARP body into the front of `buf`; `None` if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let b = buf.get_mut(..ARP_LEN)?;
        b[0..2].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
        b[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        let op = match self.op {
            ArpOp::Request => ARP_OP_REQUEST,
            ArpOp::Reply => ARP_OP_REPLY,
        };
        b[6..8].copy_from_slice(&op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
        Some(ARP_LEN)
    }

    /// Write a whole Ethernet frame (`eth_dst`, `eth_src`, EtherType ARP, this body, no padding) into `buf`;
    /// returns its length ([`ARP_FRAME_LEN`]), `None` if `buf` is shorter.
    pub fn emit_frame(&self, eth_dst: MacAddr, eth_src: MacAddr, buf: &mut [u8]) -> Option<usize> {
        let f = buf.get_mut(..ARP_FRAME_LEN)?;
        f[0..6].copy_from_slice(&eth_dst.0);
        f[6..12].copy_from_slice(&eth_src.0);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        self.emit(&mut f[ETHERNET_HEADER_LEN..])?;
        Some(ARP_FRAME_LEN)
    }

    /// The reply a host owning `target_ip` at `mac` would send to this request (RFC 826: sender and target
    /// swapped, `op` = reply), as a full frame addressed to the requester. `None` if `buf` is too short.
    pub fn emit_reply_frame(&self, mac: MacAddr, buf: &mut [u8]) -> Option<usize> {
        ArpRepr {
            op: ArpOp::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
        .emit_frame(self.sender_mac, mac, buf)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::EthernetFrame;
    use proptest::prelude::*;

    /// `ping 10.20.0.6` from 10.20.0.5 (02:aa:00:00:00:01) over a veth pair, captured with `tcpdump -xx` on
    /// Linux 6.x (no Ethernet padding on a veth).
    pub(crate) const LINUX_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xaa, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, //
        0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0xaa, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x14, 0x00,
        0x05, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x14, 0x00, 0x06,
    ];
    /// The kernel's answer from 10.20.0.6 (02:bb:00:00:00:02), same capture.
    pub(crate) const LINUX_REPLY: [u8; 42] = [
        0x02, 0xaa, 0x00, 0x00, 0x00, 0x01, 0x02, 0xbb, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00,
        0x01, //
        0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0xbb, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x14, 0x00,
        0x06, //
        0x02, 0xaa, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x14, 0x00, 0x05,
    ];
    const A: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 2]);

    fn body(frame: &[u8]) -> &[u8] {
        &frame[ETHERNET_HEADER_LEN..]
    }

    #[test]
    fn parses_linux_request_and_reply() {
        let q = ArpRepr::parse(body(&LINUX_REQUEST)).unwrap();
        assert_eq!(
            q,
            ArpRepr {
                op: ArpOp::Request,
                sender_mac: A,
                sender_ip: Ipv4Addr::new(10, 20, 0, 5),
                target_mac: MacAddr::ZERO,
                target_ip: Ipv4Addr::new(10, 20, 0, 6),
            }
        );
        assert!(!q.is_gratuitous() && !q.is_probe());
        let r = ArpRepr::parse(body(&LINUX_REPLY)).unwrap();
        assert_eq!(r.op, ArpOp::Reply);
        assert_eq!((r.sender_mac, r.sender_ip), (B, Ipv4Addr::new(10, 20, 0, 6)));
        assert_eq!((r.target_mac, r.target_ip), (A, Ipv4Addr::new(10, 20, 0, 5)));
    }

    #[test]
    fn reply_to_linux_request_is_byte_identical_to_linux_reply() {
        let q = ArpRepr::parse(body(&LINUX_REQUEST)).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(q.emit_reply_frame(B, &mut buf), Some(ARP_FRAME_LEN));
        assert_eq!(buf[..ARP_FRAME_LEN], LINUX_REPLY);
        assert_eq!(q.emit_reply_frame(B, &mut buf[..41]), None);
        // Re-emitting the parsed request reproduces the capture.
        assert_eq!(q.emit_frame(MacAddr::BROADCAST, A, &mut buf), Some(42));
        assert_eq!(buf[..42], LINUX_REQUEST);
    }

    #[test]
    fn etherparse_agrees_on_the_ethernet_layer() {
        // etherparse 0.16 has no ARP parser; it must at least see an ARP EtherType and a 28-byte payload.
        let (h, rest) = etherparse::Ethernet2Header::from_slice(&LINUX_REQUEST).unwrap();
        assert_eq!(h.ether_type, etherparse::EtherType::ARP);
        assert_eq!(rest.len(), ARP_LEN);
    }

    #[test]
    fn rejects_other_kinds_and_short_bodies() {
        assert!(matches!(
            ArpRepr::parse(&body(&LINUX_REQUEST)[..27]),
            Err(WireError::Truncated { need: 28, have: 27 })
        ));
        for (i, v, want) in [
            (15, 6, WireError::NotArpEthIpv4),    // htype 6 (IEEE 802)
            (16, 0x86, WireError::NotArpEthIpv4), // ptype 0x86dd
            (18, 8, WireError::NotArpEthIpv4),    // hlen
            (19, 16, WireError::NotArpEthIpv4),   // plen
            (21, 3, WireError::ArpOp(3)),         // RARP request
            (21, 0, WireError::ArpOp(0)),
        ] {
            let mut f = LINUX_REQUEST;
            f[i] = v;
            assert_eq!(ArpRepr::parse(body(&f)), Err(want), "byte {i} = {v}");
        }
        // Ethernet padding after the body is ignored.
        let mut padded = [0u8; 60];
        padded[..42].copy_from_slice(&LINUX_REQUEST);
        assert_eq!(
            ArpRepr::parse(body(&padded)),
            ArpRepr::parse(body(&LINUX_REQUEST))
        );
        let e = EthernetFrame::new_checked(&LINUX_REQUEST[..]).unwrap();
        assert_eq!(e.ethertype(), ETHERTYPE_ARP);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(r) = ArpRepr::parse(&b) {
                let mut out = [0u8; ARP_LEN];
                prop_assert_eq!(r.emit(&mut out), Some(ARP_LEN));
                prop_assert_eq!(&out[..], &b[..ARP_LEN]);
            }
        }

        #[test]
        fn truncation_and_flips_never_panic(cut in 0usize..42, i in 0usize..42, x in any::<u8>()) {
            let mut f = LINUX_REQUEST;
            f[i] ^= x;
            let _ = ArpRepr::parse(&body(&f)[..cut.saturating_sub(ETHERNET_HEADER_LEN)]);
            let _ = ArpRepr::parse(body(&f));
        }

        #[test]
        fn reply_round_trips(smac in any::<[u8; 6]>(), sip in any::<[u8; 4]>(), tip in any::<[u8; 4]>(), mac in any::<[u8; 6]>()) {
            let q = ArpRepr { op: ArpOp::Request, sender_mac: MacAddr(smac), sender_ip: sip.into(), target_mac: MacAddr::ZERO, target_ip: tip.into() };
            let mut buf = [0u8; 64];
            let n = q.emit_reply_frame(MacAddr(mac), &mut buf).unwrap();
            let e = EthernetFrame::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!((e.dst(), e.src(), e.ethertype()), (MacAddr(smac), MacAddr(mac), ETHERTYPE_ARP));
            let r = ArpRepr::parse(e.payload()).unwrap();
            prop_assert_eq!(r, ArpRepr { op: ArpOp::Reply, sender_mac: MacAddr(mac), sender_ip: tip.into(), target_mac: MacAddr(smac), target_ip: sip.into() });
        }
    }
}
