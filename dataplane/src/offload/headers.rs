//! Parse the Ethernet / IP / L4 headers of one frame into offsets, validating every length on the way.
//! Shared by [`super::gso`] and [`super::gro`]; the virtio header's `hdr_len` is never consulted.

use super::OffloadError;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
pub(crate) const IPV6_HLEN: usize = 40;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const UDP_HLEN: usize = 8;
pub(crate) const TCP_MIN_HLEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ip {
    V4,
    V6,
}

/// Offsets into a frame whose headers were all bounds-checked: every offset below is `<= ip_end <= len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Headers {
    pub ip: Ip,
    /// Start of the L4 header (= Ethernet + IP header length).
    pub l4_off: usize,
    pub proto: u8,
    /// Start of the L4 payload (= `l4_off` + TCP data offset or 8 for UDP).
    pub payload_off: usize,
    /// End of the IP packet as its length field says; bytes after it (Ethernet padding) are not part of it.
    pub ip_end: usize,
}

impl Headers {
    pub fn payload_len(&self) -> usize {
        self.ip_end.saturating_sub(self.payload_off)
    }
    pub fn l4_len(&self) -> usize {
        self.ip_end.saturating_sub(self.l4_off)
    }
    pub fn ip_hlen(&self) -> usize {
        self.l4_off.saturating_sub(ETH_HLEN)
    }
    /// Pseudo-header sum for an L4 segment of `l4_len` bytes in `frame` (addresses read from the IP header).
    pub fn pseudo(&self, frame: &[u8], l4_len: usize) -> u64 {
        match self.ip {
            Ip::V4 => super::checksum::pseudo_header_v4(
                arr(frame, ETH_HLEN + 12),
                arr(frame, ETH_HLEN + 16),
                self.proto,
                // Callers bound l4_len by a 16-bit IP length; saturate rather than wrap just in case.
                u16::try_from(l4_len).unwrap_or(u16::MAX),
            ),
            Ip::V6 => super::checksum::pseudo_header_v6(
                arr(frame, ETH_HLEN + 8),
                arr(frame, ETH_HLEN + 24),
                self.proto,
                u32::try_from(l4_len).unwrap_or(u32::MAX),
            ),
        }
    }
}

/// Read a fixed-size array at `at`, zeros if out of range (only used on already-validated offsets).
#[inline]
pub(crate) fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(arr(b, at))
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(arr(b, at))
}

/// Write big-endian bytes at `at`; out-of-range writes are ignored (callers only write validated offsets).
#[inline]
pub(crate) fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at.saturating_add(v.len())) {
        dst.copy_from_slice(v);
    }
}

#[inline]
pub(crate) fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), OffloadError> {
    if have < need {
        Err(OffloadError::Truncated { what, need, have })
    } else {
        Ok(())
    }
}

/// Parse Ethernet (untagged) + IPv4 (options allowed, no fragments) or IPv6 (no extension headers) + TCP or
/// UDP. IPv4 options are reported through `l4_off`; callers that cannot handle them check `ip_hlen()`.
pub(crate) fn parse(frame: &[u8]) -> Result<Headers, OffloadError> {
    need("Ethernet header", ETH_HLEN, frame.len())?;
    let ethertype = be16(frame, 12);
    let ip = match ethertype {
        ETHERTYPE_IPV4 => Ip::V4,
        ETHERTYPE_IPV6 => Ip::V6,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Err(OffloadError::VlanTagged(ethertype)),
        other => return Err(OffloadError::UnsupportedEtherType(other)),
    };
    let (l4_off, proto, ip_end) = match ip {
        Ip::V4 => {
            need("IPv4 header", ETH_HLEN + 20, frame.len())?;
            let v = byte(frame, ETH_HLEN);
            if v >> 4 != 4 {
                return Err(OffloadError::IpVersion {
                    expected: 4,
                    found: v >> 4,
                });
            }
            let ihl = usize::from(v & 0x0f) * 4;
            if ihl < 20 {
                return Err(OffloadError::Ipv4HeaderLen(ihl));
            }
            need("IPv4 options", ETH_HLEN + ihl, frame.len())?;
            let frag = be16(frame, ETH_HLEN + 6);
            // MF set or a non-zero fragment offset: a fragment.
            if frag & 0x3fff != 0 {
                return Err(OffloadError::Fragment(frag));
            }
            let total = usize::from(be16(frame, ETH_HLEN + 2));
            let available = frame.len() - ETH_HLEN;
            if total < ihl || total > available {
                return Err(OffloadError::IpLength {
                    claimed: total,
                    available,
                });
            }
            (ETH_HLEN + ihl, byte(frame, ETH_HLEN + 9), ETH_HLEN + total)
        }
        Ip::V6 => {
            need("IPv6 header", ETH_HLEN + IPV6_HLEN, frame.len())?;
            let v = byte(frame, ETH_HLEN) >> 4;
            if v != 6 {
                return Err(OffloadError::IpVersion {
                    expected: 6,
                    found: v,
                });
            }
            let next = byte(frame, ETH_HLEN + 6);
            if next != IPPROTO_TCP && next != IPPROTO_UDP {
                return Err(OffloadError::Ipv6ExtensionHeader(next));
            }
            let plen = usize::from(be16(frame, ETH_HLEN + 4));
            let available = frame.len() - ETH_HLEN - IPV6_HLEN;
            // plen 0 with a hop-by-hop jumbogram is excluded above (next header would be 0).
            if plen > available {
                return Err(OffloadError::IpLength {
                    claimed: plen,
                    available,
                });
            }
            (ETH_HLEN + IPV6_HLEN, next, ETH_HLEN + IPV6_HLEN + plen)
        }
    };
    let l4_hlen = match proto {
        IPPROTO_TCP => {
            need("TCP header", l4_off + TCP_MIN_HLEN, ip_end)?;
            let doff = usize::from(byte(frame, l4_off + 12) >> 4) * 4;
            if doff < TCP_MIN_HLEN {
                return Err(OffloadError::TcpHeaderLen(doff));
            }
            need("TCP options", l4_off + doff, ip_end)?;
            doff
        }
        IPPROTO_UDP => {
            need("UDP header", l4_off + UDP_HLEN, ip_end)?;
            UDP_HLEN
        }
        // Not TCP/UDP: report the headers we have; payload starts right after IP.
        _ => 0,
    };
    Ok(Headers {
        ip,
        l4_off,
        proto,
        payload_off: l4_off + l4_hlen,
        ip_end,
    })
}
