//! `struct virtio_net_hdr` (linux/virtio_net.h), the 10-byte header in front of every TAP read and write
//! when the TAP has `IFF_VNET_HDR`. Little endian: the TAP uses the host's virtio byte order, and overlayd
//! only supports little-endian hosts for offloads (`TUNSETVNETLE` is the default on x86/arm64).

use super::OffloadError;

pub const VIRTIO_NET_HDR_LEN: usize = 10;

/// `flags`: the checksum from `csum_start` to the end is to be computed and stored at
/// `csum_start + csum_offset` (the field holds the pseudo-header sum meanwhile).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum has been verified (the kernel maps it to `CHECKSUM_UNNECESSARY`).
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// UFO: IP-fragmenting UDP offload. Never produced by modern kernels, not supported here.
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// USO: UDP segmentation offload (kernel >= 6.2 with `TUN_F_USO4/6`).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// Flag bit on `gso_type`: the TCP superframe had CWR set (ECN); it must appear on the first segment only.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Decoded `virtio_net_hdr`. `hdr_len` is advisory and never trusted by this module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Decode the first 10 bytes of `buf` (extra bytes, e.g. a 12-byte header's `num_buffers`, are ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, OffloadError> {
        let b: &[u8; VIRTIO_NET_HDR_LEN] = buf
            .get(..VIRTIO_NET_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(OffloadError::Truncated {
                what: "virtio-net header",
                need: VIRTIO_NET_HDR_LEN,
                have: buf.len(),
            })?;
        let [flags, gso_type, h0, h1, g0, g1, s0, s1, o0, o1] = *b;
        Ok(Self {
            flags,
            gso_type,
            hdr_len: u16::from_le_bytes([h0, h1]),
            gso_size: u16::from_le_bytes([g0, g1]),
            csum_start: u16::from_le_bytes([s0, s1]),
            csum_offset: u16::from_le_bytes([o0, o1]),
        })
    }

    /// Encode into exactly 10 bytes.
    pub fn encode(&self, out: &mut [u8; VIRTIO_NET_HDR_LEN]) {
        let [h0, h1] = self.hdr_len.to_le_bytes();
        let [g0, g1] = self.gso_size.to_le_bytes();
        let [s0, s1] = self.csum_start.to_le_bytes();
        let [o0, o1] = self.csum_offset.to_le_bytes();
        *out = [self.flags, self.gso_type, h0, h1, g0, g1, s0, s1, o0, o1];
    }

    /// The encoded bytes.
    pub fn to_bytes(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0u8; VIRTIO_NET_HDR_LEN];
        self.encode(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_tso4_read() {
        // What a TAP read of a TCPv4 TSO superframe looks like: NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448,
        // csum_start 34 (14 Ethernet + 20 IPv4), csum_offset 16.
        let b = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];
        let h = VirtioNetHdr::decode(&b).unwrap();
        assert_eq!(
            h,
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16
            }
        );
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn decode_ecn_tcpv6_and_extra_bytes() {
        let b = [
            0x01, 0x84, 0x56, 0x00, 0x94, 0x05, 0x36, 0x00, 0x10, 0x00, 0xee, 0xee,
        ];
        let h = VirtioNetHdr::decode(&b).unwrap();
        assert_eq!(h.gso_type & !VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV6);
        assert_eq!(h.gso_type & VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_ECN);
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (86, 1428, 54, 16)
        );
        let mut out = [0u8; 10];
        h.encode(&mut out);
        assert_eq!(&out[..], &b[..10]);
    }

    #[test]
    fn default_is_all_zero() {
        assert_eq!(VirtioNetHdr::default().to_bytes(), [0u8; 10]);
        assert_eq!(VirtioNetHdr::decode(&[0u8; 10]).unwrap(), VirtioNetHdr::default());
    }

    #[test]
    fn truncated() {
        for n in 0..VIRTIO_NET_HDR_LEN {
            assert_eq!(
                VirtioNetHdr::decode(&[0u8; 16][..n]),
                Err(OffloadError::Truncated {
                    what: "virtio-net header",
                    need: 10,
                    have: n
                })
            );
        }
    }
}
