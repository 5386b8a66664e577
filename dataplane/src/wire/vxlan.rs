//! VXLAN header (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//! Receive policy (explicit, see REFERENCE.md): the I flag must be set; reserved bits are ignored as RFC 7348
//! says, with one exception: the VXLAN-GPE "P" bit (0x04), whose next-protocol field means the payload may not be
//! Ethernet at all — such datagrams are rejected (Linux rejects every unexpected bit; we are as liberal as is safe).

use super::WireError;
use std::fmt;

pub const VXLAN_HEADER_LEN: usize = 8;
/// The "I" flag: the VNI field is valid.
pub const VXLAN_FLAG_I: u8 = 0x08;
/// VXLAN-GPE next-protocol flag; the payload may not be Ethernet.
pub const VXLAN_FLAG_GPE_P: u8 = 0x04;
/// IANA-assigned VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 + UDP + VXLAN + inner Ethernet: 20 + 8 + 8 + 14.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// Outer IPv6 + UDP + VXLAN + inner Ethernet: 40 + 8 + 8 + 14.
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Bytes VXLAN adds on an underlay whose local address is `local`: the overlay MTU is the underlay's minus this.
pub fn vxlan_overhead(local: std::net::IpAddr) -> u32 {
    if local.is_ipv4() {
        VXLAN_OVERHEAD_V4
    } else {
        VXLAN_OVERHEAD_V6
    }
}

/// A 24-bit VXLAN network identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Vni(u32);

impl Vni {
    pub const MAX: u32 = (1 << 24) - 1;
    pub fn new(v: u32) -> Result<Vni, WireError> {
        if v > Self::MAX {
            Err(WireError::VniRange(v))
        } else {
            Ok(Vni(v))
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A checked view of a VXLAN datagram (UDP payload): header plus encapsulated frame.
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Validates the length and the flags; the accessors cannot panic afterwards.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < VXLAN_HEADER_LEN {
            return Err(WireError::Truncated {
                need: VXLAN_HEADER_LEN,
                have: b.len(),
            });
        }
        if b[0] & VXLAN_FLAG_I == 0 {
            return Err(WireError::MissingIFlag);
        }
        if b[0] & VXLAN_FLAG_GPE_P != 0 {
            return Err(WireError::ReservedBits);
        }
        Ok(VxlanPacket { buf })
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn vni(&self) -> Vni {
        let b = self.buf.as_ref();
        Vni(u32::from_be_bytes([0, b[4], b[5], b[6]]))
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[VXLAN_HEADER_LEN..]
    }
}

/// The header as overlayd emits it: I flag, VNI, every reserved bit zero.
pub fn header(vni: Vni) -> [u8; VXLAN_HEADER_LEN] {
    let v = vni.0.to_be_bytes();
    [VXLAN_FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overhead_per_underlay_family() {
        // outer IP header + UDP (8) + VXLAN + inner Ethernet (14)
        let rest = 8 + VXLAN_HEADER_LEN as u32 + 14;
        assert_eq!(vxlan_overhead([10, 0, 0, 1].into()), 20 + rest);
        assert_eq!(
            vxlan_overhead("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().into()),
            40 + rest
        );
    }

    /// A datagram captured from Linux 6.18 kernel VXLAN (`ip link add vx type vxlan id 42 dstport 4789 …`,
    /// address 02:00:00:00:01:01) with a Python UDP listener: the UDP payload of an IPv6 router solicitation.
    const KERNEL_RS_HEX: &str =
        "0800000000002a0033330000000202000000010186dd6000000000103afffe80000000000000\
        000000fffe000101ff0200000000000000000000000000028500792c000000000101020000000101";

    pub(crate) fn kernel_datagram() -> Vec<u8> {
        let h: Vec<u8> = KERNEL_RS_HEX
            .bytes()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        h.chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_kernel_datagram() {
        let d = kernel_datagram();
        assert_eq!(d.len(), 8 + 14 + 40 + 16);
        let p = VxlanPacket::new_checked(&d[..]).unwrap();
        assert_eq!(p.vni().get(), 42);
        assert_eq!(p.flags(), VXLAN_FLAG_I);
        let eth = crate::wire::EthernetFrame::new_checked(p.payload()).unwrap();
        assert_eq!(eth.dst().to_string(), "33:33:00:00:00:02");
        assert!(eth.dst().is_multicast());
        assert_eq!(eth.src().to_string(), "02:00:00:00:01:01");
        assert_eq!(eth.ethertype(), crate::wire::ethernet::ETHERTYPE_IPV6);
        // etherparse agrees on the inner packet.
        let inner = etherparse::SlicedPacket::from_ethernet(p.payload()).unwrap();
        assert!(matches!(inner.net, Some(etherparse::NetSlice::Ipv6(_))));
    }

    #[test]
    fn emits_what_the_kernel_emits() {
        assert_eq!(header(Vni::new(42).unwrap())[..], kernel_datagram()[..8]);
        assert_eq!(
            header(Vni::new(0xabcdef).unwrap()),
            [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let d = kernel_datagram();
        assert_eq!(
            VxlanPacket::new_checked(&d[..7]).unwrap_err(),
            WireError::Truncated { need: 8, have: 7 }
        );
        let mut no_i = d.clone();
        no_i[0] = 0x00;
        assert_eq!(
            VxlanPacket::new_checked(&no_i[..]).unwrap_err(),
            WireError::MissingIFlag
        );
        let mut gpe = d.clone();
        gpe[0] = 0x0c;
        assert_eq!(
            VxlanPacket::new_checked(&gpe[..]).unwrap_err(),
            WireError::ReservedBits
        );
    }

    #[test]
    fn ignores_reserved_bits_per_rfc() {
        let mut r = kernel_datagram();
        r[0] = 0x88; // GBP "G" bit
        r[1] = 0xff;
        r[3] = 0x01;
        r[7] = 0xff; // reserved byte after the VNI
        let p = VxlanPacket::new_checked(&r[..]).unwrap();
        assert_eq!(p.vni().get(), 42);
    }

    #[test]
    fn vni_range() {
        assert!(Vni::new(Vni::MAX).is_ok());
        assert_eq!(Vni::new(1 << 24).unwrap_err(), WireError::VniRange(1 << 24));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(p) = VxlanPacket::new_checked(&data[..]) {
                prop_assert!(p.vni().get() <= Vni::MAX);
                prop_assert_eq!(p.payload().len(), data.len() - VXLAN_HEADER_LEN);
            }
        }

        #[test]
        fn truncation_is_an_error(cut in 0usize..8) {
            prop_assert!(VxlanPacket::new_checked(&kernel_datagram()[..cut]).is_err());
        }
    }
}
