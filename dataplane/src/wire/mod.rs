//! Wire formats as checked byte views (smoltcp style): `new_checked` validates length and flags once, after
//! which the accessors cannot panic. Nothing here allocates.

pub mod ethernet;
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
}
