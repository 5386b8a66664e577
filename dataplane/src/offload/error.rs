//! Why an offload operation refused its input. Every variant is a drop reason worth its own counter.

/// Why a virtio header or frame could not be segmented or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("VLAN-tagged frame (ethertype {0:#06x}): offloads only handle untagged frames")]
    VlanTagged(u16),
    #[error("ethertype {0:#06x} is neither IPv4 nor IPv6")]
    UnsupportedEtherType(u16),
    #[error("IP version {found} where the ethertype says {expected}")]
    IpVersion { expected: u8, found: u8 },
    #[error("IPv4 header length {0} bytes is below the 20-byte minimum")]
    Ipv4HeaderLen(usize),
    #[error("IPv4 fragment (flags/offset {0:#06x}): fragments cannot be segmented or coalesced")]
    Fragment(u16),
    #[error("IPv6 next header {0} is an extension header or unsupported protocol")]
    Ipv6ExtensionHeader(u8),
    #[error("IP length field says {claimed} bytes but the frame holds {available}")]
    IpLength { claimed: usize, available: usize },
    #[error("TCP data offset {0} bytes is outside 20..=60")]
    TcpHeaderLen(usize),
    #[error("L4 protocol {proto} does not match gso_type {gso_type:#04x}")]
    ProtocolMismatch { proto: u8, gso_type: u8 },
    #[error("gso_type {0:#04x} is not supported ({1})")]
    Unsupported(u8, &'static str),
    #[error("gso_size is 0 for a GSO frame")]
    ZeroGsoSize,
    #[error("checksum start {start} + offset {offset} + 2 is outside the {len}-byte frame")]
    ChecksumOffset { start: usize, offset: usize, len: usize },
    #[error("segment of {0} bytes does not fit a 16-bit IP length field")]
    SegmentTooLarge(usize),
    #[error("output buffer too small: need {need} bytes, have {have}")]
    OutputTooSmall { need: usize, have: usize },
}
