//! RX: inner TCP/UDP checksums a kernel sender left *partial*.
//!
//! A Linux VXLAN sender on a veth or virtio underlay hands the inner skb down as `CHECKSUM_PARTIAL`: the
//! checksum field holds the folded, uncomplemented pseudo-header sum over the L4 length
//! (`~csum_tcpudp_magic(saddr, daddr, len, proto, 0)` in `__tcp_v4_send_check`/`udp4_hwcsum`), and the device
//! that would fill it in never does, because the skb never meets a NIC. Our UDP socket delivers those bytes as
//! they are. Written to the TAP unchanged, the container's stack sees a wrong checksum and drops every segment.
//!
//! Exactly that value (and nothing else) makes us hand the frame to the TAP with `NEEDS_CSUM` and
//! `csum_start`/`csum_offset` pointing at the field: the kernel then treats it like its own partial skb
//! (delivered locally without verification, or completed if it leaves through a device). A frame whose field
//! holds a real checksum is written as before and the kernel verifies it. A full checksum that happens to equal
//! the pseudo-header sum (a 1 in 65536 coincidence) is harmless: completing it yields the same value.
//!
//! Without a virtio header (`--no-offload`) [`fill_partial`] computes the checksum in place instead.
//!
//! Never allocates, never panics on input: offsets come from the header parser, which bounds-checks them.

use super::checksum::{fold, sum};
use super::headers::{be16, parse, put, Headers, IPPROTO_TCP, IPPROTO_UDP, UDP_HLEN};
use super::virtio::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_LEN};

/// Offset of the checksum field inside the TCP header (RFC 9293 §3.1).
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum field inside the UDP header (RFC 768).
pub const UDP_CSUM_OFFSET: u16 = 6;

/// The checksum field's offset in the L4 header, if `h` is TCP or UDP and the field lies inside the packet.
fn csum_offset(h: &Headers) -> Option<u16> {
    let off = match h.proto {
        IPPROTO_TCP => TCP_CSUM_OFFSET,
        IPPROTO_UDP => UDP_CSUM_OFFSET,
        _ => return None,
    };
    (h.l4_off + usize::from(off) + 2 <= h.ip_end).then_some(off)
}

/// If the frame's TCP/UDP checksum field holds exactly the folded pseudo-header sum, the virtio header that
/// tells the TAP to complete it: `NEEDS_CSUM`, `csum_start` = L4 offset from the Ethernet header (TAP framing),
/// `csum_offset` 16 (TCP) or 6 (UDP), `hdr_len` = the headers up to the end of the L4 header.
pub(crate) fn partial_hdr(frame: &[u8], h: &Headers) -> Option<VirtioNetHdr> {
    let off = csum_offset(h)?;
    let field = be16(frame, h.l4_off + usize::from(off));
    if field != fold(h.pseudo(frame, h.l4_len())) {
        return None;
    }
    let l4_hdr_end = if h.proto == IPPROTO_UDP {
        h.l4_off + UDP_HLEN
    } else {
        h.payload_off
    };
    Some(VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        // Offsets are bounded by the frame, which the caller bounds by a 16-bit IP length plus headers.
        hdr_len: u16::try_from(l4_hdr_end).ok()?,
        csum_start: u16::try_from(h.l4_off).ok()?,
        csum_offset: off,
        ..VirtioNetHdr::default()
    })
}

/// Whether `frame` (an inner Ethernet frame) carries a partial TCP/UDP checksum, and if so the virtio header
/// to write in front of it; see the module docs.
pub fn partial_checksum(frame: &[u8]) -> Option<VirtioNetHdr> {
    let h = parse(frame).ok()?;
    partial_hdr(frame, &h)
}

/// The virtio header for writing a decapsulated frame to the TAP as it is: `NEEDS_CSUM` for a partial
/// checksum, else all zeros (the kernel verifies the checksum itself).
pub fn rx_header(frame: &[u8]) -> [u8; VIRTIO_NET_HDR_LEN] {
    partial_checksum(frame).map_or([0; VIRTIO_NET_HDR_LEN], |h| h.to_bytes())
}

/// For a TAP without virtio headers: if the frame's checksum is partial, compute it in place. Returns whether
/// it did.
pub fn fill_partial(frame: &mut [u8]) -> bool {
    let Ok(h) = parse(frame) else { return false };
    let Some(hdr) = partial_hdr(frame, &h) else {
        return false;
    };
    // The field already holds the pseudo-header sum, so summing the L4 bytes as they are includes it.
    let Some(l4) = frame.get(h.l4_off..h.ip_end) else {
        return false;
    };
    let mut c = !fold(sum(l4, 0));
    if h.proto == IPPROTO_UDP && c == 0 {
        c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    put(
        frame,
        usize::from(hdr.csum_start) + usize::from(hdr.csum_offset),
        &c.to_be_bytes(),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::checksum::checksum;
    use crate::offload::virtio::VIRTIO_NET_HDR_GSO_NONE;
    use proptest::prelude::*;

    const MACS: [u8; 12] = [2, 0, 0, 0, 1, 2, 2, 0, 0, 0, 1, 1];

    /// A TCP segment 10.1.0.1:40000 → 10.1.0.2:5001 with 5 payload bytes, as a kernel sender leaves it with
    /// CHECKSUM_PARTIAL: field = fold(pseudo) = fold(0x0a01_0001 + 0x0a01_0002 + 6 + 25) = 0x1424.
    fn tcp4_partial() -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(&[0x08, 0x00]);
        // IPv4, total length 45, DF, TTL 64, TCP, header checksum filled in below.
        f.extend_from_slice(&[
            0x45, 0, 0, 45, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2,
        ]);
        // TCP: ports, seq, ack, doff 5, ACK|PSH, window, checksum 0x1424, urg 0.
        f.extend_from_slice(&[
            0x9c, 0x40, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0x01, 0xf5, 0x14, 0x24, 0, 0,
        ]);
        f.extend_from_slice(b"hello");
        let c = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// A UDP datagram [2001:db8::1]:5353 → [2001:db8::2]:53 with 4 payload bytes, checksum field partial.
    fn udp6_partial() -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 12, 17, 64]);
        let a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut b = a;
        b[15] = 2;
        f.extend_from_slice(&a);
        f.extend_from_slice(&b);
        // UDP header, length 12, checksum = fold(pseudo) (computed independently below).
        f.extend_from_slice(&[0x14, 0xe9, 0x00, 0x35, 0, 12, 0, 0]);
        f.extend_from_slice(b"abcd");
        // Pseudo-header by hand: sum of the 16-bit words of both addresses + length + next header.
        let mut s: u32 = 0;
        for w in a.chunks(2).chain(b.chunks(2)) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        s += 12 + 17;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        f[60..62].copy_from_slice(&(s as u16).to_be_bytes());
        f
    }

    fn tcp6_partial() -> Vec<u8> {
        let mut f = udp6_partial();
        // Same addresses, TCP (next header 6), 20-byte header + 4 payload bytes = 24.
        f.truncate(54);
        f[18..20].copy_from_slice(&24u16.to_be_bytes());
        f[20] = 6;
        f.extend_from_slice(&[
            0x9c, 0x40, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x10, 0x01, 0xf5, 0, 0, 0, 0,
        ]);
        f.extend_from_slice(b"wxyz");
        let h = parse(&f).unwrap();
        let p = fold(h.pseudo(&f, 24));
        f[70..72].copy_from_slice(&p.to_be_bytes());
        f
    }

    fn udp4_partial() -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 31, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2,
        ]);
        // UDP 1000 → 2000, length 11; fold(pseudo) = fold(0x0a010001 + 0x0a010002 + 17 + 11) = 0x1421.
        f.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 11, 0x14, 0x21]);
        f.extend_from_slice(b"xyz");
        let c = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The same frame with the L4 checksum completed (what a NIC or `tx off` would send).
    fn completed(mut f: Vec<u8>) -> Vec<u8> {
        assert!(fill_partial(&mut f));
        f
    }

    fn l4_verifies(f: &[u8]) -> bool {
        let h = parse(f).unwrap();
        fold(sum(&f[h.l4_off..h.ip_end], h.pseudo(f, h.l4_len()))) == 0xffff
    }

    #[test]
    fn tcp4_partial_needs_csum() {
        let f = tcp4_partial();
        assert_eq!(&f[50..52], &[0x14, 0x24], "literal pseudo-header sum");
        let h = partial_checksum(&f).expect("partial");
        assert_eq!(
            h,
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_NONE,
                hdr_len: 54,
                gso_size: 0,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!(rx_header(&f), h.to_bytes());
        assert!(!l4_verifies(&f));
    }

    #[test]
    fn udp4_partial_needs_csum() {
        let f = udp4_partial();
        let h = partial_checksum(&f).expect("partial");
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (34, 6, 42));
    }

    #[test]
    fn ipv6_partial_needs_csum() {
        let u = udp6_partial();
        let h = partial_checksum(&u).expect("udp6 partial");
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (54, 6, 62));
        let t = tcp6_partial();
        let h = partial_checksum(&t).expect("tcp6 partial");
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (54, 16, 74));
    }

    #[test]
    fn full_checksums_are_left_alone() {
        for f in [tcp4_partial(), udp4_partial(), udp6_partial(), tcp6_partial()] {
            let full = completed(f);
            assert!(l4_verifies(&full));
            assert_eq!(partial_checksum(&full), None);
            assert_eq!(rx_header(&full), [0; VIRTIO_NET_HDR_LEN]);
            let mut again = full.clone();
            assert!(!fill_partial(&mut again));
            assert_eq!(again, full);
        }
        // A real TCP/IPv4 checksum literal (computed independently with Python): the partial 0x1424
        // completed over the header and "hello".
        assert_eq!(&completed(tcp4_partial())[50..52], &[0xa6, 0x2f]);
    }

    #[test]
    fn near_misses_and_other_frames_are_not_partial() {
        let mut f = tcp4_partial();
        f[51] ^= 1; // pseudo-header sum off by one bit
        assert_eq!(partial_checksum(&f), None);
        let mut z = udp4_partial();
        z[40..42].copy_from_slice(&[0, 0]); // UDP over IPv4 without checksum
        assert_eq!(partial_checksum(&z), None);
        let mut icmp = tcp4_partial();
        icmp[23] = 1;
        assert_eq!(partial_checksum(&icmp), None);
        let mut arp = tcp4_partial();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(partial_checksum(&arp), None);
        let mut frag = tcp4_partial();
        frag[20] = 0x20; // MF: a fragment, whose L4 header we must not read as such
        assert_eq!(partial_checksum(&frag), None);
        assert_eq!(partial_checksum(&[]), None);
    }

    #[test]
    fn udp_fill_turns_zero_into_all_ones() {
        // Find a payload whose complete checksum would be 0, then check fill_partial writes 0xffff.
        let base = udp4_partial();
        let want = (0..=u16::MAX).find_map(|w| {
            let mut f = base.clone();
            f[42..44].copy_from_slice(&w.to_be_bytes());
            let h = parse(&f).unwrap();
            let p = fold(h.pseudo(&f, h.l4_len()));
            f[40..42].copy_from_slice(&p.to_be_bytes());
            (!fold(sum(&f[34..], 0)) == 0).then_some(f)
        });
        let mut f = want.expect("some payload sums to zero");
        assert!(fill_partial(&mut f));
        assert_eq!(&f[40..42], &[0xff, 0xff]);
        assert!(l4_verifies(&f));
    }

    proptest! {
        /// Completing a partial checksum always yields one that verifies, and partial detection is exact:
        /// after completion the frame is no longer partial unless the coincidence (full == pseudo) holds.
        #[test]
        fn fill_verifies(payload in proptest::collection::vec(any::<u8>(), 0..300), v6 in any::<bool>()) {
            let mut f = if v6 { tcp6_partial() } else { tcp4_partial() };
            let hdr = if v6 { 74 } else { 54 };
            f.truncate(hdr);
            f.extend_from_slice(&payload);
            let ip_len = (f.len() - 14) as u16;
            if v6 {
                f[18..20].copy_from_slice(&(ip_len - 40).to_be_bytes());
            } else {
                f[16..18].copy_from_slice(&ip_len.to_be_bytes());
                f[24..26].copy_from_slice(&[0, 0]);
                let c = checksum(&f[14..34], 0);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
            let h = parse(&f).unwrap();
            let p = fold(h.pseudo(&f, h.l4_len()));
            let at = h.l4_off + 16;
            f[at..at + 2].copy_from_slice(&p.to_be_bytes());
            prop_assert!(partial_checksum(&f).is_some());
            prop_assert!(fill_partial(&mut f));
            prop_assert!(l4_verifies(&f));
            let c = u16::from_be_bytes([f[at], f[at + 1]]);
            prop_assert_eq!(partial_checksum(&f).is_some(), c == p);
        }

        /// Arbitrary bytes: never panics, and a reported header points inside the frame.
        #[test]
        fn arbitrary_frames(mut f in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(h) = partial_checksum(&f) {
                prop_assert!(usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 <= f.len());
            }
            let _ = fill_partial(&mut f);
        }

        /// Truncating or flipping any byte of a partial frame never panics.
        #[test]
        fn corrupted_partial(cut in 0usize..80, at in 0usize..80, x in any::<u8>()) {
            let mut f = tcp4_partial();
            if let Some(b) = f.get_mut(at) { *b ^= x; }
            f.truncate(cut);
            let _ = partial_checksum(&f);
            let _ = fill_partial(&mut f);
        }
    }
}
