//! RX coalescing without a payload copy: the pure pieces behind [`super::Coalescer`]'s flush.
//!
//! A pending superframe is kept as the first segment's headers (a copy of at most [`MAX_HDRS`] bytes) plus the
//! byte ranges of every segment's TCP payload inside the receive buffer ([`Region`]). Flushing rewrites the
//! copied headers for the whole superframe ([`finish_headers`]) and hands the TAP one `writev` of
//! `[virtio header, headers, payload 1, payload 2, ...]` ([`gather`]); the kernel copies the payload once, straight
//! from the receive buffer into its skb. The receive buffer must therefore stay untouched until the flush: the
//! [`Region`]'s epoch (bumped by every `recvmmsg`) lets the coalescer notice a flush against refilled bytes and
//! drop instead of writing stale data.
//!
//! The TAP accepts such a write up to 64 KiB of IP packet; `writev` takes at most `UIO_MAXIOV` (1024) iovecs, far
//! above the `2 + MAX_SEGMENTS` used here.

use super::super::checksum::{fold, sum};
use super::super::headers::{put, Headers, Ip, ETH_HLEN, IPPROTO_TCP, IPV6_HLEN};
use std::io::IoSlice;
use std::ops::Range;

/// Largest header block a superframe carries: Ethernet + IPv6 (IPv4 options are never coalesced) + TCP with
/// the maximum 40 bytes of options.
pub const MAX_HDRS: usize = ETH_HLEN + IPV6_HLEN + 60;

/// Most segments in one superframe, so one `writev` stays far below `UIO_MAXIOV` (1024) and a slot's range
/// table stays small. At the usual MSS (1398–1448) 46 segments already fill 64 KiB; with a smaller MSS the
/// superframe is simply shorter.
pub const MAX_SEGMENTS: usize = 64;

/// iovecs of one superframe write: virtio header, headers, payloads.
pub const MAX_IOVECS: usize = 2 + MAX_SEGMENTS;

/// The bytes pending superframes point into (a `recvmmsg` batch's data), tagged with the receive that filled
/// them. Ranges recorded under one epoch are only ever resolved under the same epoch.
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    pub bytes: &'a [u8],
    pub epoch: u64,
}

impl<'a> Region<'a> {
    pub fn new(bytes: &'a [u8], epoch: u64) -> Self {
        Region { bytes, epoch }
    }
}

/// Rewrite the first segment's headers (`hdr`, `l4_off`/`hdrs` offsets into it) into the headers of a
/// superframe carrying `payload_len` bytes of TCP payload: IPv4 total length and header checksum or IPv6
/// payload length, and the TCP checksum field set to the folded, uncomplemented pseudo-header sum over the
/// whole TCP length (the `CHECKSUM_PARTIAL` convention, completed by the kernel or a NIC). Returns `None`
/// (headers untouched) when the lengths do not fit the 16-bit IP length or `hdr` is shorter than `hdrs`.
pub(crate) fn finish_headers(
    hdr: &mut [u8],
    ip: Ip,
    l4_off: usize,
    hdrs: usize,
    payload_len: usize,
) -> Option<()> {
    if hdr.len() < hdrs || l4_off + 20 > hdrs || hdrs < ETH_HLEN + 20 {
        return None;
    }
    let len = hdrs.checked_add(payload_len)?;
    let l4_len = len - l4_off;
    match ip {
        Ip::V4 => {
            let ip_len = u16::try_from(len - ETH_HLEN).ok()?;
            put(hdr, ETH_HLEN + 2, &ip_len.to_be_bytes());
            put(hdr, ETH_HLEN + 10, &[0, 0]);
            let c = hdr.get(ETH_HLEN..l4_off).map_or(0, |iph| !fold(sum(iph, 0)));
            put(hdr, ETH_HLEN + 10, &c.to_be_bytes());
        }
        Ip::V6 => {
            let plen = u16::try_from(len - ETH_HLEN - IPV6_HLEN).ok()?;
            put(hdr, ETH_HLEN + 4, &plen.to_be_bytes());
        }
    }
    let h = Headers {
        ip,
        l4_off,
        proto: IPPROTO_TCP,
        payload_off: hdrs,
        ip_end: len,
    };
    let pseudo = fold(h.pseudo(hdr, l4_len));
    put(hdr, l4_off + 16, &pseudo.to_be_bytes());
    Some(())
}

/// Lay out one TAP write in `out`: the virtio header, the header block, then each payload range of `region`.
/// Returns the number of iovecs used, or `None` if a range lies outside the region or `out` is too short (the
/// caller drops the superframe rather than write something else).
pub(crate) fn gather<'a>(
    vnet: &'a [u8],
    headers: &'a [u8],
    region: &'a [u8],
    payloads: &[Range<usize>],
    out: &mut [IoSlice<'a>],
) -> Option<usize> {
    let n = 2 + payloads.len();
    let (head, rest) = out.get_mut(..n)?.split_at_mut(2);
    head[0] = IoSlice::new(vnet);
    head[1] = IoSlice::new(headers);
    for (slot, r) in rest.iter_mut().zip(payloads) {
        *slot = IoSlice::new(region.get(r.clone())?);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::headers::parse;
    use crate::offload::testutil::*;

    fn flat(iov: &[IoSlice<'_>]) -> Vec<u8> {
        iov.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn headers_v4_lengths_and_checksums() {
        // Two segments of 100 bytes glued: the headers of the first rewritten for 200 bytes.
        let data = payload(200, 5);
        let whole = tcp4(&Tcp::default(), &data);
        let first = tcp4(&Tcp::default(), &data[..100]);
        let h = parse(&first).unwrap();
        let mut hdr = first[..h.payload_off].to_vec();
        finish_headers(&mut hdr, Ip::V4, h.l4_off, h.payload_off, 200).unwrap();
        // IP length and header checksum as for the whole frame.
        assert_eq!(&hdr[16..18], &whole[16..18]);
        assert_eq!(naive_sum(&[&hdr[14..34]]), 0xffff);
        // TCP checksum field: the pseudo-header sum over 20 + 200 bytes (literal: 0x0a00_0001 + 0x0a00_0002 +
        // 6 + 220, folded).
        assert_eq!(u16::from_be_bytes([hdr[50], hdr[51]]), 0x14e5);
        let mut full = hdr.clone();
        full.extend_from_slice(&data);
        assert!(fill_and_verify(&mut full));
    }

    #[test]
    fn headers_v6() {
        let first = tcp6(&Tcp::default(), &payload(10, 1));
        let h = parse(&first).unwrap();
        let mut hdr = first[..h.payload_off].to_vec();
        finish_headers(&mut hdr, Ip::V6, h.l4_off, h.payload_off, 3000).unwrap();
        assert_eq!(u16::from_be_bytes([hdr[18], hdr[19]]), 20 + 3000);
        let mut full = hdr.clone();
        full.extend_from_slice(&payload(3000, 2));
        assert!(fill_and_verify(&mut full));
    }

    #[test]
    fn headers_refuse_impossible_lengths() {
        let first = tcp4(&Tcp::default(), &payload(10, 1));
        let mut hdr = first[..54].to_vec();
        let before = hdr.clone();
        assert_eq!(
            finish_headers(&mut hdr, Ip::V4, 34, 54, 65_536),
            None,
            "over 16 bits"
        );
        assert_eq!(
            finish_headers(&mut hdr, Ip::V4, 34, 60, 10),
            None,
            "hdr shorter than hdrs"
        );
        assert_eq!(
            finish_headers(&mut hdr, Ip::V4, 40, 54, 10),
            None,
            "TCP header cut"
        );
        assert_eq!(hdr, before);
        assert!(finish_headers(&mut hdr, Ip::V4, 34, 54, 65_535 - 40).is_some());
    }

    #[test]
    fn gather_lays_out_header_then_payloads() {
        let region: Vec<u8> = (0..=255u8).collect();
        let vnet = [1u8; 10];
        let hdrs = [9u8; 54];
        let mut out = [IoSlice::new(&[]); MAX_IOVECS];
        let n = gather(&vnet, &hdrs, &region, &[10..20, 20..25, 100..101], &mut out).unwrap();
        assert_eq!(n, 5);
        let mut want = vnet.to_vec();
        want.extend_from_slice(&hdrs);
        want.extend(10..25u8);
        want.push(100);
        assert_eq!(flat(&out[..n]), want);
        // Out of the region, or more payloads than iovecs: refused.
        assert_eq!(
            gather(&vnet, &hdrs, &region, std::slice::from_ref(&(250..257)), &mut out),
            None
        );
        let many = vec![0..1; MAX_SEGMENTS + 1];
        assert_eq!(gather(&vnet, &hdrs, &region, &many, &mut out), None);
        assert_eq!(gather(&vnet, &hdrs, &region, &[], &mut out), Some(2));
    }

    /// Complete the partial TCP checksum of a contiguous frame and check it verifies.
    fn fill_and_verify(f: &mut [u8]) -> bool {
        let h = parse(f).unwrap();
        let c = !fold(sum(&f[h.l4_off..h.ip_end], 0));
        f[h.l4_off + 16..h.l4_off + 18].copy_from_slice(&c.to_be_bytes());
        fold(sum(&f[h.l4_off..h.ip_end], h.pseudo(f, h.l4_len()))) == 0xffff
    }
}
