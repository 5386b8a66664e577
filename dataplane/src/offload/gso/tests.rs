use super::*;
use crate::offload::testutil::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;

const PREFIX: [u8; 8] = [0x08, 0, 0, 0, 0, 0x01, 0x2c, 0];

fn tso_hdr(gso_type: u8, gso_size: u16, csum_start: u16) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: 0, // deliberately wrong: never trusted
        gso_size,
        csum_start,
        csum_offset: 16,
    }
}

/// Mimic what the kernel hands a TAP: TCP checksum field = pseudo-header sum, IPv4 header checksum stale.
fn kernelize(frame: &mut [u8]) {
    let h = crate::offload::headers::parse(frame).unwrap();
    let ps = checksum::fold(h.pseudo(frame, h.l4_len()));
    let at = h.l4_off + if h.proto == IPPROTO_TCP { 16 } else { 6 };
    frame[at..at + 2].copy_from_slice(&ps.to_be_bytes());
    if h.ip == Ip::V4 {
        frame[24] ^= 0x5a;
    }
}

#[derive(Debug)]
struct Seg {
    seq: u32,
    flags: u8,
    ip_id: Option<u16>,
    ip_len: usize,
    payload: Vec<u8>,
}

fn parse_segments(out: &[u8], s: &Segments) -> Vec<Seg> {
    assert!(s.count >= 1);
    assert_eq!(s.total_len, out.len());
    let chunks: Vec<&[u8]> = out.chunks(s.stride).collect();
    assert_eq!(chunks.len(), s.count);
    chunks
        .iter()
        .map(|c| {
            assert_eq!(&c[..8], &PREFIX);
            let f = &c[8..];
            assert!(checksums_ok(f), "bad checksum in segment");
            let p = SlicedPacket::from_ethernet(f).unwrap();
            let (ip_id, ip_len) = match p.net.unwrap() {
                NetSlice::Ipv4(v4) => (
                    Some(v4.header().identification()),
                    usize::from(v4.header().total_len()),
                ),
                NetSlice::Ipv6(v6) => (None, usize::from(v6.header().payload_length()) + 40),
            };
            assert_eq!(ip_len + 14, f.len(), "IP length must cover exactly the segment");
            match p.transport.unwrap() {
                TransportSlice::Tcp(t) => Seg {
                    seq: t.sequence_number(),
                    flags: t.slice()[13],
                    ip_id,
                    ip_len,
                    payload: t.payload().to_vec(),
                },
                TransportSlice::Udp(u) => {
                    assert_eq!(usize::from(u.length()), u.slice().len());
                    Seg {
                        seq: 0,
                        flags: 0,
                        ip_id,
                        ip_len,
                        payload: u.payload().to_vec(),
                    }
                }
                other => panic!("unexpected transport {other:?}"),
            }
        })
        .collect()
}

fn run(hdr: VirtioNetHdr, frame: &mut [u8]) -> (Segments, Vec<u8>) {
    let mut out = vec![0u8; 200_000];
    let s = segment(&hdr, frame, &PREFIX, &mut out).unwrap();
    out.truncate(s.total_len);
    (s, out)
}

fn check_tcp_split(frame: Vec<u8>, t: Tcp, data: &[u8], gso_type: u8, mss: u16, csum_start: u16) {
    let mut f = frame;
    kernelize(&mut f);
    let (s, out) = run(tso_hdr(gso_type, mss, csum_start), &mut f);
    let mss = usize::from(mss);
    let want = data.len().div_ceil(mss).max(1);
    assert_eq!(s.count, want);
    let segs = parse_segments(&out, &s);
    let mut joined = Vec::new();
    for (i, sg) in segs.iter().enumerate() {
        assert_eq!(sg.seq, t.seq.wrapping_add((i * mss) as u32));
        if i + 1 < segs.len() {
            assert_eq!(sg.payload.len(), mss);
            assert_eq!(sg.flags & 0x09, 0, "FIN/PSH only on the last segment");
        } else {
            assert_eq!(sg.flags & 0x08 != 0, t.psh);
            assert_eq!(sg.flags & 0x01 != 0, t.fin);
        }
        assert_eq!(sg.flags & 0x10, 0x10, "ACK kept");
        if let Some(id) = sg.ip_id {
            assert_eq!(id, t.ip_id.wrapping_add(i as u16));
        }
        assert!(sg.ip_len <= 1500);
        joined.extend_from_slice(&sg.payload);
    }
    assert_eq!(joined, data);
}

#[test]
fn tcp4_no_options_odd_last_segment() {
    let t = Tcp {
        psh: true,
        ..Tcp::default()
    };
    let data = payload(10_000, 1);
    check_tcp_split(tcp4(&t, &data), t, &data, VIRTIO_NET_HDR_GSO_TCPV4, 1460, 34);
}

#[test]
fn tcp4_timestamps_exact_multiple_and_fin() {
    let t = Tcp {
        psh: true,
        fin: true,
        timestamps: Some((123, 456)),
        ..Tcp::default()
    };
    let data = payload(1448 * 7, 2);
    check_tcp_split(tcp4(&t, &data), t, &data, VIRTIO_NET_HDR_GSO_TCPV4, 1448, 34);
}

#[test]
fn tcp4_seq_and_id_wrap() {
    let t = Tcp {
        seq: u32::MAX - 2000,
        ip_id: u16::MAX - 1,
        ..Tcp::default()
    };
    let data = payload(6000, 3);
    check_tcp_split(tcp4(&t, &data), t, &data, VIRTIO_NET_HDR_GSO_TCPV4, 1400, 34);
}

#[test]
fn tcp6_with_timestamps() {
    let t = Tcp {
        psh: true,
        timestamps: Some((9, 10)),
        ..Tcp::default()
    };
    let data = payload(20_001, 4);
    check_tcp_split(tcp6(&t, &data), t, &data, VIRTIO_NET_HDR_GSO_TCPV6, 1428, 54);
}

#[test]
fn tcp6_max_superframe() {
    let t = Tcp::default();
    let data = payload(65_535 - 20, 5);
    check_tcp_split(tcp6(&t, &data), t, &data, VIRTIO_NET_HDR_GSO_TCPV6, 1440, 54);
}

#[test]
fn single_segment_superframe() {
    let t = Tcp {
        psh: true,
        ..Tcp::default()
    };
    let data = payload(700, 6);
    check_tcp_split(tcp4(&t, &data), t, &data, VIRTIO_NET_HDR_GSO_TCPV4, 1448, 34);
}

#[test]
fn ecn_cwr_only_on_first_segment() {
    let mut f = tcp4(&Tcp::default(), &payload(4000, 7));
    f[14 + 20 + 13] |= TCP_FLAG_CWR;
    kernelize(&mut f);
    let (s, out) = run(
        tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 1448, 34),
        &mut f,
    );
    let segs = parse_segments(&out, &s);
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[0].flags & TCP_FLAG_CWR, TCP_FLAG_CWR);
    assert!(segs[1..].iter().all(|s| s.flags & TCP_FLAG_CWR == 0));
}

#[test]
fn padding_after_ip_packet_is_dropped() {
    let data = payload(3000, 8);
    let mut f = tcp4(&Tcp::default(), &data);
    f.extend_from_slice(&[0xee; 6]);
    kernelize(&mut f);
    let (s, out) = run(tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 34), &mut f);
    let joined: Vec<u8> = parse_segments(&out, &s)
        .into_iter()
        .flat_map(|s| s.payload)
        .collect();
    assert_eq!(joined, data);
}

#[test]
fn udp_l4_split_v4_and_v6() {
    for v6 in [false, true] {
        let data = payload(5000, 9);
        let mut f = if v6 {
            udp6(5000, 6000, &data)
        } else {
            udp4(5000, 6000, &data)
        };
        kernelize(&mut f);
        let mut hdr = tso_hdr(VIRTIO_NET_HDR_GSO_UDP_L4, 1200, if v6 { 54 } else { 34 });
        hdr.csum_offset = 6;
        let (s, out) = run(hdr, &mut f);
        assert_eq!(s.count, 5);
        let segs = parse_segments(&out, &s);
        assert!(segs[..4].iter().all(|s| s.payload.len() == 1200));
        let joined: Vec<u8> = segs.into_iter().flat_map(|s| s.payload).collect();
        assert_eq!(joined, data);
    }
}

#[test]
fn needs_csum_completion_gso_none() {
    // TCP/IPv4 and UDP/IPv6 frames with only the pseudo-header sum in place, as the kernel hands them over.
    let mut tcp = tcp4(
        &Tcp {
            psh: true,
            ..Tcp::default()
        },
        &payload(333, 10),
    );
    let mut udp = udp6(1, 2, &payload(101, 11));
    for (f, start, off) in [(&mut tcp, 34u16, 16u16), (&mut udp, 54, 6)] {
        kernelize(f);
        if f[12] == 0x08 {
            f[24] ^= 0x5a; // restore IPv4 header checksum; GSO_NONE leaves the IP header alone
        }
        assert!(!checksums_ok(f));
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: off,
            ..Default::default()
        };
        let (s, out) = run(hdr, f);
        assert_eq!((s.count, s.stride, s.total_len), (1, f.len() + 8, f.len() + 8));
        assert_eq!(&out[..8], &PREFIX);
        assert!(checksums_ok(&out[8..]));
    }
}

#[test]
fn gso_none_without_flags_is_copied_verbatim() {
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&SRC_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let orig = arp.clone();
    let (s, out) = run(VirtioNetHdr::default(), &mut arp);
    assert_eq!(s.count, 1);
    assert_eq!(&out[8..], &orig[..]);
}

fn err(hdr: VirtioNetHdr, mut frame: Vec<u8>, out_len: usize) -> OffloadError {
    let mut out = vec![0u8; out_len];
    segment(&hdr, &mut frame, &PREFIX, &mut out).unwrap_err()
}

#[test]
fn errors_name_the_reason() {
    let f = tcp4(&Tcp::default(), &payload(3000, 12));
    let h4 = tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 34);
    assert_eq!(
        err(VirtioNetHdr { gso_size: 0, ..h4 }, f.clone(), 100_000),
        OffloadError::ZeroGsoSize
    );
    assert!(matches!(
        err(h4, f.clone(), 3000),
        OffloadError::OutputTooSmall { .. }
    ));
    assert!(matches!(
        err(tso_hdr(VIRTIO_NET_HDR_GSO_TCPV6, 1448, 34), f.clone(), 100_000),
        OffloadError::ProtocolMismatch { proto: 6, .. }
    ));
    assert!(matches!(
        err(tso_hdr(VIRTIO_NET_HDR_GSO_UDP, 1448, 34), f.clone(), 100_000),
        OffloadError::Unsupported(3, _)
    ));
    assert!(matches!(
        err(tso_hdr(0x42, 1448, 34), f.clone(), 100_000),
        OffloadError::Unsupported(0x42, _)
    ));

    let mut vlan = f.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(err(h4, vlan, 100_000), OffloadError::VlanTagged(0x8100));

    let mut frag = f.clone();
    frag[14 + 6] |= 0x20; // MF
    assert!(matches!(err(h4, frag, 100_000), OffloadError::Fragment(_)));

    let mut long = f.clone();
    long[16..18].copy_from_slice(&4000u16.to_be_bytes());
    assert!(matches!(
        err(h4, long, 100_000),
        OffloadError::IpLength { claimed: 4000, .. }
    ));

    let mut doff = f.clone();
    doff[14 + 20 + 12] = 0x40;
    assert_eq!(err(h4, doff, 100_000), OffloadError::TcpHeaderLen(16));

    let mut ext = tcp6(&Tcp::default(), &payload(3000, 13));
    ext[14 + 6] = 0; // hop-by-hop
    assert_eq!(
        err(tso_hdr(VIRTIO_NET_HDR_GSO_TCPV6, 1448, 54), ext, 100_000),
        OffloadError::Ipv6ExtensionHeader(0)
    );

    let csum = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: 3040,
        csum_offset: 16,
        ..Default::default()
    };
    assert!(matches!(
        err(csum, f.clone(), 100_000),
        OffloadError::ChecksumOffset { start: 3040, .. }
    ));

    assert!(matches!(
        err(h4, f[..30].to_vec(), 100_000),
        OffloadError::Truncated {
            what: "IPv4 header",
            ..
        }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Truncating or corrupting any byte of a valid superframe, with any header, never panics, and a success
    /// always describes a layout that fits `out`.
    #[test]
    fn hostile_input_never_panics(
        v6 in any::<bool>(),
        len in 0usize..5000,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        hdr in any::<[u8; 10]>(),
        use_real_hdr in any::<bool>(),
        mss in 1u16..3000,
        out_len in 0usize..20_000,
    ) {
        let mut f = mangled_tcp(v6, len, &flips, cut);
        let h = if use_real_hdr {
            tso_hdr(if v6 { VIRTIO_NET_HDR_GSO_TCPV6 } else { VIRTIO_NET_HDR_GSO_TCPV4 }, mss, if v6 { 54 } else { 34 })
        } else {
            VirtioNetHdr::decode(&hdr).unwrap()
        };
        let mut out = vec![0u8; out_len];
        if let Ok(s) = segment(&h, &mut f, &PREFIX, &mut out) {
            prop_assert!(s.total_len <= out.len());
            prop_assert!(s.count >= 1 && s.stride * (s.count - 1) < s.total_len);
        }
    }

    /// Any valid TCP superframe splits into segments whose payloads concatenate to the original.
    #[test]
    fn valid_superframes_round_trip(v6 in any::<bool>(), len in 0usize..30_000, mss in 500u16..9000, ts in any::<bool>()) {
        let t = Tcp { timestamps: ts.then_some((1, 2)), ..Tcp::default() };
        let data = payload(len, 1);
        let mut f = if v6 { tcp6(&t, &data) } else { tcp4(&t, &data) };
        kernelize(&mut f);
        let h = tso_hdr(if v6 { VIRTIO_NET_HDR_GSO_TCPV6 } else { VIRTIO_NET_HDR_GSO_TCPV4 }, mss, 0);
        let (s, out) = run(h, &mut f);
        let joined: Vec<u8> = parse_segments(&out, &s).into_iter().flat_map(|s| s.payload).collect();
        prop_assert_eq!(joined, data);
    }
}

#[test]
fn fit_mss_lowers_the_mss_to_the_path() {
    // A superframe cut for a 1450-byte overlay MTU (MSS 1398 with timestamps), over a path that allows 1350.
    let t = Tcp {
        psh: true,
        timestamps: Some((1, 2)),
        ..Tcp::default()
    };
    let data = payload(30_000, 3);
    for (mut f, gso_type, hlen) in [
        (tcp4(&t, &data), VIRTIO_NET_HDR_GSO_TCPV4, 20 + 32),
        (tcp6(&t, &data), VIRTIO_NET_HDR_GSO_TCPV6, 40 + 32),
    ] {
        kernelize(&mut f);
        let hdr = tso_hdr(gso_type, 1398, 14 + hlen as u16 - 32);
        let fitted = fit_mss(&hdr, &f, 1350).unwrap();
        assert_eq!(usize::from(fitted.gso_size), 1350 - hlen);
        assert_eq!(fitted.gso_type, hdr.gso_type);
        let (s, out) = run(fitted, &mut f);
        let segs = parse_segments(&out, &s);
        assert!(
            segs.iter().all(|sg| sg.ip_len <= 1350),
            "every segment fits the path"
        );
        assert!(segs.iter().any(|sg| sg.ip_len == 1350), "and uses it fully");
        let joined: Vec<u8> = segs.iter().flat_map(|sg| sg.payload.clone()).collect();
        assert_eq!(joined, data, "byte-identical stream");
    }
}

#[test]
fn fit_mss_keeps_what_fits_and_refuses_udp() {
    let t = Tcp::default();
    let data = payload(5000, 4);
    let f = tcp4(&t, &data);
    let hdr = tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1000, 34);
    assert_eq!(fit_mss(&hdr, &f, 1350).unwrap(), hdr, "already fits");
    let none = VirtioNetHdr::default();
    assert_eq!(
        fit_mss(&none, &f, 100).unwrap(),
        none,
        "GSO_NONE is the caller's business"
    );
    assert_eq!(
        fit_mss(&hdr, &f, 40).unwrap_err(),
        OffloadError::ZeroGsoSize,
        "no room for payload"
    );
    let u = udp4(1, 2, &payload(4000, 5));
    let uh = tso_hdr(VIRTIO_NET_HDR_GSO_UDP_L4, 1400, 34);
    assert!(matches!(
        fit_mss(&uh, &u, 1350),
        Err(OffloadError::Unsupported(..))
    ));
    assert_eq!(fit_mss(&uh, &u, 1500).unwrap(), uh);
}

proptest! {
    #[test]
    fn fit_mss_segments_always_fit(mtu in 200usize..1500, mss in 100u16..9000, len in 1usize..20_000) {
        let t = Tcp::default();
        let data = payload(len, 6);
        let mut f = tcp4(&t, &data);
        kernelize(&mut f);
        let hdr = tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, mss, 34);
        let fitted = fit_mss(&hdr, &f, mtu).unwrap();
        prop_assert!(fitted.gso_size <= mss);
        let (s, out) = run(fitted, &mut f);
        for seg in out.chunks(s.stride) {
            prop_assert!(seg.len() - PREFIX.len() - 14 <= mtu);
        }
    }
}
