//! Wire formats as checked byte views (smoltcp style): `new_checked` validates length and flags once, after
//! which the accessors cannot panic. Nothing here allocates.

pub mod arp;
pub mod ethernet;
pub mod nd;
pub mod probe;
pub mod vxlan;

pub use ethernet::{EthernetFrame, MacAddr, ETHERNET_HEADER_LEN};
pub use vxlan::{Vni, VxlanPacket, VXLAN_HEADER_LEN};

/// Why a buffer is not a valid header of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("buffer too short: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("VXLAN I flag (0x08) not set")]
    MissingIFlag,
    #[error("VXLAN reserved bits set")]
    ReservedBits,
    #[error("VNI {0} out of range (0..=16777215)")]
    VniRange(u32),
    #[error("cannot parse MAC address {0:?}: expected six hex octets like 02:00:00:00:00:01")]
    MacSyntax(String),
    #[error("not an overlayd probe")]
    NotProbe,
    #[error("not an ARP packet for Ethernet/IPv4 (hardware type 1, protocol 0x0800, lengths 6 and 4)")]
    NotArpEthIpv4,
    #[error("ARP operation {0} is neither request (1) nor reply (2)")]
    ArpOp(u16),
    #[error("not an IPv6 neighbour solicitation or advertisement")]
    NotNeighbor,
    #[error("neighbour discovery message with hop limit {0}, not 255 (RFC 4861 §7.1: it crossed a router)")]
    NdHopLimit(u8),
    #[error("ICMPv6 checksum mismatch")]
    Icmpv6Checksum,
    #[error("invalid neighbour discovery message: {0}")]
    NdInvalid(&'static str),
}
