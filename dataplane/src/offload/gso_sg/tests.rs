use super::*;
use crate::offload::gso::segment;
use crate::offload::headers::{parse, Ip, IPPROTO_TCP};
use crate::offload::testutil::*;
use crate::offload::virtio::VIRTIO_NET_HDR_GSO_UDP;
use proptest::prelude::*;

const PREFIX: [u8; 8] = [0x08, 0, 0, 0, 0, 0x01, 0x2c, 0];

fn hdr(gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: 0,
        gso_size,
        csum_start,
        csum_offset,
    }
}

/// As the kernel hands frames to a TAP: L4 checksum field = pseudo-header sum, IPv4 header checksum stale.
fn kernelize(frame: &mut [u8]) {
    let h = parse(frame).unwrap();
    let ps = checksum::fold(h.pseudo(frame, h.l4_len()));
    let at = h.l4_off + if h.proto == IPPROTO_TCP { 16 } else { 6 };
    frame[at..at + 2].copy_from_slice(&ps.to_be_bytes());
    if h.ip == Ip::V4 {
        frame[24] ^= 0x5a;
    }
}

/// The segments as the wire carries them: headers(i) ++ payload(i), concatenated.
fn assemble(l: &SgLayout, hdrs: &[u8], frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..l.count {
        v.extend_from_slice(&hdrs[l.headers(i)]);
        v.extend_from_slice(&frame[l.payload(i)]);
    }
    v
}

/// segment_sg and the copying segment agree byte for byte (and on stride and length) for the same input.
fn same_as_copying(h: VirtioNetHdr, frame: &[u8]) -> SgLayout {
    let mut a = frame.to_vec();
    let mut out = vec![0u8; 300_000];
    let s = segment(&h, &mut a, &PREFIX, &mut out).unwrap();
    let mut b = frame.to_vec();
    let mut hdrs = vec![0u8; 200_000];
    let l = segment_sg(&h, &mut b, &PREFIX, &mut hdrs).unwrap();
    assert_eq!(l.count, s.count);
    assert_eq!(l.stride(), s.stride);
    assert_eq!(l.total_len(), s.total_len);
    assert_eq!(assemble(&l, &hdrs, &b), &out[..s.total_len]);
    l
}

fn every_segment_verifies(l: &SgLayout, hdrs: &[u8], frame: &[u8]) {
    for i in 0..l.count {
        let mut seg = hdrs[l.headers(i)][PREFIX.len()..].to_vec();
        seg.extend_from_slice(&frame[l.payload(i)]);
        assert!(checksums_ok(&seg), "segment {i} of {}", l.count);
    }
}

#[test]
fn tcp4_superframe_headers_apart_payload_in_place() {
    let t = Tcp {
        timestamps: Some((7, 9)),
        psh: true,
        ..Tcp::default()
    };
    let data = payload(10_000, 3);
    let mut f = tcp4(&t, &data);
    kernelize(&mut f);
    let h = hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1398, 34, 16);
    let l = same_as_copying(h, &f);
    assert_eq!((l.count, l.mss, l.last_chunk), (8, 1398, 10_000 - 7 * 1398));
    assert_eq!(l.hdr_len, 8 + 14 + 20 + 32);
    assert_eq!(l.payload_off, 66);
    assert_eq!(l.stride(), 8 + 66 + 1398);
    let mut hdrs = vec![0u8; 1000];
    let l = segment_sg(&h, &mut f, &PREFIX, &mut hdrs).unwrap();
    every_segment_verifies(&l, &hdrs, &f);
    // Payloads are the original bytes, in place.
    for i in 0..l.count {
        assert_eq!(
            &f[l.payload(i)],
            &data[i * 1398..(i * 1398 + 1398).min(data.len())]
        );
    }
}

#[test]
fn tcp6_udp4_udp6_match_the_copying_path() {
    let data = payload(5000, 9);
    let mut f = tcp6(&Tcp::default(), &data);
    kernelize(&mut f);
    same_as_copying(hdr(VIRTIO_NET_HDR_GSO_TCPV6, 1000, 54, 16), &f);
    for v6 in [false, true] {
        let mut f = if v6 { udp6(1, 2, &data) } else { udp4(1, 2, &data) };
        kernelize(&mut f);
        let l = same_as_copying(hdr(VIRTIO_NET_HDR_GSO_UDP_L4, 1200, 0, 6), &f);
        assert_eq!(l.count, 5);
    }
}

#[test]
fn whole_frame_needs_csum_and_passthrough() {
    let data = payload(1448, 1);
    let mut f = tcp4(&Tcp::default(), &data);
    kernelize(&mut f);
    f[24] ^= 0x5a; // GSO_NONE leaves the IPv4 header alone: keep its checksum valid
    let h = VirtioNetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        ..hdr(0, 0, 34, 16)
    };
    let l = same_as_copying(h, &f);
    assert!(l.is_whole_frame());
    assert_eq!((l.hdr_len, l.payload_off, l.last_chunk), (8, 0, f.len()));
    let mut hdrs = [0u8; 8];
    let l = segment_sg(&h, &mut f, &PREFIX, &mut hdrs).unwrap();
    assert!(checksums_ok(&f[l.payload(0)]));
    // Any ethertype passes through untouched without NEEDS_CSUM.
    let arp = [0xabu8; 60];
    let mut g = arp;
    let l = segment_sg(&VirtioNetHdr::default(), &mut g, &PREFIX, &mut hdrs).unwrap();
    assert_eq!((g, l.count, l.stride()), (arp, 1, 68));
}

#[test]
fn header_buffer_too_small_leaves_the_frame_untouched() {
    let data = payload(3000, 2);
    let mut f = tcp4(&Tcp::default(), &data);
    kernelize(&mut f);
    let orig = f.clone();
    let h = hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1000, 34, 16);
    let need = 3 * (8 + 54);
    let mut small = vec![0u8; need - 1];
    assert!(matches!(
        segment_sg(&h, &mut f, &PREFIX, &mut small),
        Err(OffloadError::OutputTooSmall { need: n, .. }) if n == need
    ));
    assert_eq!(f, orig);
    // A NEEDS_CSUM frame is not completed either (a retry would otherwise sum the finished checksum).
    let single = VirtioNetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        ..h
    };
    assert!(segment_sg(&single, &mut f, &PREFIX, &mut [0u8; 7]).is_err());
    assert_eq!(f, orig);
    let mut ok = vec![0u8; need];
    let l = segment_sg(&h, &mut f, &PREFIX, &mut ok).unwrap();
    every_segment_verifies(&l, &ok, &f);
}

#[test]
fn unsupported_and_mismatched_types_are_errors() {
    let mut f = udp4(1, 2, &payload(100, 0));
    let mut out = [0u8; 512];
    for t in [VIRTIO_NET_HDR_GSO_UDP, 0x42] {
        let e = segment_sg(&hdr(t, 50, 0, 6), &mut f, &PREFIX, &mut out).unwrap_err();
        assert!(matches!(e, OffloadError::Unsupported(..)), "{e}");
    }
    let e = segment_sg(
        &hdr(VIRTIO_NET_HDR_GSO_TCPV4, 50, 0, 6),
        &mut f,
        &PREFIX,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, OffloadError::ProtocolMismatch { .. }), "{e}");
    let e = segment_sg(
        &hdr(VIRTIO_NET_HDR_GSO_UDP_L4, 0, 0, 6),
        &mut f,
        &PREFIX,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, OffloadError::ZeroGsoSize), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid superframe (TCP v4/v6 with or without timestamps, UDP) cuts exactly like the copying path.
    #[test]
    fn valid_superframes_match_the_copying_path(kind in 0u8..4, len in 0usize..30_000, mss in 200u16..9000,
                                                 ts in any::<bool>(), psh in any::<bool>(), fin in any::<bool>()) {
        let t = Tcp { timestamps: ts.then_some((1, 2)), psh, fin, ..Tcp::default() };
        let data = payload(len, 5);
        let (mut f, gso, cs) = match kind {
            0 => (tcp4(&t, &data), VIRTIO_NET_HDR_GSO_TCPV4, 16),
            1 => (tcp6(&t, &data), VIRTIO_NET_HDR_GSO_TCPV6, 16),
            2 => (udp4(5, 6, &data), VIRTIO_NET_HDR_GSO_UDP_L4, 6),
            _ => (udp6(5, 6, &data), VIRTIO_NET_HDR_GSO_UDP_L4, 6),
        };
        kernelize(&mut f);
        let h = hdr(gso, mss, 0, cs);
        let l = same_as_copying(h, &f);
        let mut hdrs = vec![0u8; l.headers_len()];
        let l = segment_sg(&h, &mut f, &PREFIX, &mut hdrs).unwrap();
        every_segment_verifies(&l, &hdrs, &f);
    }

    /// Hostile bytes and headers never panic; a success always describes ranges inside both buffers.
    #[test]
    fn hostile_input_never_panics(
        v6 in any::<bool>(),
        len in 0usize..5000,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        raw in any::<[u8; 10]>(),
        mss in 1u16..3000,
        out_len in 0usize..20_000,
    ) {
        let mut f = mangled_tcp(v6, len, &flips, cut);
        let mut h = VirtioNetHdr::decode(&raw).unwrap();
        if raw[0] & 1 == 0 {
            h.gso_type = if v6 { VIRTIO_NET_HDR_GSO_TCPV6 } else { VIRTIO_NET_HDR_GSO_TCPV4 };
            h.gso_size = mss;
        }
        let mut out = vec![0u8; out_len];
        if let Ok(l) = segment_sg(&h, &mut f, &PREFIX, &mut out) {
            prop_assert!(l.count >= 1 && l.headers_len() <= out.len());
            prop_assert!(l.payload(l.count - 1).end <= f.len());
        }
    }
}
