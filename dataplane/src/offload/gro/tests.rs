use super::*;
use crate::offload::gso::segment;
use crate::offload::testutil::*;
use crate::offload::virtio::{VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_LEN};
use proptest::prelude::*;

/// The tests drive the real coalescer through this wrapper of the same name: every pushed frame is appended to
/// one arena that stays one receive epoch (as the worker keeps a `recvmmsg` batch until its flush), and every
/// emitted iovec list is turned back into (virtio header, frame).
struct Coalescer {
    c: super::Coalescer,
    arena: Vec<u8>,
}

const EPOCH: u64 = 7;

fn unvec(emit: &mut impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8]), iov: &[IoSlice<'_>]) {
    let h: [u8; VIRTIO_NET_HDR_LEN] = iov[0][..].try_into().expect("virtio header first");
    assert!(iov.len() <= MAX_IOVECS);
    let f: Vec<u8> = iov[1..].iter().flat_map(|s| s.iter().copied()).collect();
    emit(&h, &f)
}

impl Coalescer {
    fn new(max_flows: usize) -> Self {
        Coalescer {
            c: super::Coalescer::new(max_flows),
            arena: Vec::new(),
        }
    }
    fn push(&mut self, f: &[u8], mut emit: impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8])) -> PushOutcome {
        let start = self.arena.len();
        self.arena.extend_from_slice(f);
        let r = Region::new(&self.arena, EPOCH);
        self.c
            .push(r, start..self.arena.len(), |iov| unvec(&mut emit, iov))
    }
    fn flush(&mut self, mut emit: impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8])) {
        self.c
            .flush(Region::new(&self.arena, EPOCH), |iov| unvec(&mut emit, iov));
        assert_eq!(self.c.stale_drops(), 0);
    }
    fn pending(&self) -> usize {
        self.c.pending()
    }
}

type Out = Vec<(VirtioNetHdr, Vec<u8>)>;

fn sink(out: &mut Out) -> impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8]) + '_ {
    |h, f| out.push((VirtioNetHdr::decode(h).unwrap(), f.to_vec()))
}

const MSS: usize = 1448;

/// `n` consecutive full segments of one flow starting at `t.seq`, IDs consecutive.
fn flow(t: Tcp, n: usize, v6: bool, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let ti = Tcp {
                seq: t.seq.wrapping_add((i * MSS) as u32),
                ip_id: t.ip_id.wrapping_add(i as u16),
                ..t
            };
            let data = payload(MSS, salt.wrapping_add(i as u8));
            if v6 {
                tcp6(&ti, &data)
            } else {
                tcp4(&ti, &data)
            }
        })
        .collect()
}

fn tcp_payload(f: &[u8]) -> &[u8] {
    let h = crate::offload::headers::parse(f).unwrap();
    &f[h.payload_off..h.ip_end]
}

fn push_all(c: &mut Coalescer, frames: &[Vec<u8>], out: &mut Out) -> Vec<PushOutcome> {
    frames.iter().map(|f| c.push(f, sink(out))).collect()
}

/// Split a merged superframe back with gso::segment (as the kernel would) and return the frames.
fn resegment(h: &VirtioNetHdr, f: &[u8]) -> Vec<Vec<u8>> {
    let mut frame = f.to_vec();
    let mut out = vec![0u8; 200_000];
    let s = segment(h, &mut frame, &[], &mut out).unwrap();
    out[..s.total_len].chunks(s.stride).map(|c| c.to_vec()).collect()
}

#[test]
fn ten_segments_one_superframe_v4_with_timestamps() {
    let t = Tcp {
        timestamps: Some((1000, 2000)),
        ..Tcp::default()
    };
    let frames = flow(t, 10, false, 1);
    let mut c = Coalescer::new(4);
    let mut out = Out::new();
    let r = push_all(&mut c, &frames, &mut out);
    assert_eq!(r[0], PushOutcome::Started);
    assert!(r[1..].iter().all(|r| *r == PushOutcome::Merged));
    assert!(out.is_empty());
    c.flush(sink(&mut out));
    assert_eq!(c.pending(), 0);
    assert_eq!(out.len(), 1);
    let (h, f) = &out[0];
    let hdrs = 14 + 20 + 32;
    assert_eq!(
        *h,
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: hdrs as u16,
            gso_size: MSS as u16,
            csum_start: 34,
            csum_offset: 16
        }
    );
    assert_eq!(f.len(), hdrs + 10 * MSS);
    assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, 20 + 32 + 10 * MSS);
    assert_eq!(naive_sum(&[&f[14..34]]), 0xffff, "IPv4 header checksum");
    let concat: Vec<u8> = frames.iter().flat_map(|f| tcp_payload(f).to_vec()).collect();
    assert_eq!(&f[hdrs..], &concat[..]);
    // Checksum field = pseudo-header sum: completing it over the TCP bytes verifies.
    let l4_len = ((f.len() - 34) as u32).to_be_bytes();
    let pseudo = naive_sum(&[&SRC4, &DST4, &[0, 6], &l4_len]);
    assert_eq!(u16::from_be_bytes([f[50], f[51]]), pseudo);
    // The kernel's view: re-segmenting gives back the original frames byte for byte.
    assert_eq!(resegment(h, f), frames);
}

#[test]
fn ipv6_superframe() {
    let frames = flow(Tcp::default(), 5, true, 2);
    let mut c = Coalescer::new(1);
    let mut out = Out::new();
    push_all(&mut c, &frames, &mut out);
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 1);
    let (h, f) = &out[0];
    assert_eq!(
        (h.gso_type, h.csum_start, h.csum_offset, h.gso_size),
        (VIRTIO_NET_HDR_GSO_TCPV6, 54, 16, MSS as u16)
    );
    assert_eq!(u16::from_be_bytes([f[18], f[19]]) as usize, 20 + 5 * MSS);
    assert_eq!(resegment(h, f), frames);
}

#[test]
fn two_interleaved_flows() {
    let a = flow(
        Tcp {
            sport: 1,
            ..Tcp::default()
        },
        4,
        false,
        3,
    );
    let b = flow(
        Tcp {
            sport: 2,
            seq: 9,
            ..Tcp::default()
        },
        4,
        true,
        4,
    );
    let mut c = Coalescer::new(16);
    let mut out = Out::new();
    for (x, y) in a.iter().zip(&b) {
        c.push(x, sink(&mut out));
        c.push(y, sink(&mut out));
    }
    assert!(out.is_empty());
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 2);
    let mut got: Vec<Vec<Vec<u8>>> = out.iter().map(|(h, f)| resegment(h, f)).collect();
    got.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(got, want);
}

fn single_frames(out: &Out) -> Vec<Vec<u8>> {
    out.iter()
        .flat_map(|(h, f)| {
            if h.gso_type == VIRTIO_NET_HDR_GSO_NONE {
                vec![f.clone()]
            } else {
                resegment(h, f)
            }
        })
        .collect()
}

#[test]
fn seq_gap_not_merged() {
    let mut frames = flow(Tcp::default(), 3, false, 5);
    frames.remove(1);
    let mut c = Coalescer::new(4);
    let mut out = Out::new();
    let r = push_all(&mut c, &frames, &mut out);
    assert_eq!(r, vec![PushOutcome::Started, PushOutcome::Started]);
    assert_eq!(out.len(), 1, "first flushed when the gap showed");
    c.flush(sink(&mut out));
    assert!(out
        .iter()
        .all(|(h, _)| h.gso_type == VIRTIO_NET_HDR_GSO_NONE && h.flags == VIRTIO_NET_HDR_F_DATA_VALID));
    assert_eq!(single_frames(&out), frames);
}

#[test]
fn differing_options_ack_or_window_not_merged() {
    let t = Tcp {
        timestamps: Some((1, 2)),
        ..Tcp::default()
    };
    for change in 0..3 {
        let mut frames = flow(t, 2, false, 6);
        let t2 = match change {
            0 => Tcp {
                timestamps: Some((2, 2)),
                ..t
            },
            1 => Tcp { ack: t.ack + 1, ..t },
            _ => Tcp {
                window: t.window + 1,
                ..t
            },
        };
        frames[1] = tcp4(
            &Tcp {
                seq: t.seq + MSS as u32,
                ip_id: t.ip_id + 1,
                ..t2
            },
            tcp_payload(&frames[1]),
        );
        let mut c = Coalescer::new(4);
        let mut out = Out::new();
        push_all(&mut c, &frames, &mut out);
        c.flush(sink(&mut out));
        assert_eq!(out.len(), 2, "change {change}");
        assert_eq!(single_frames(&out), frames);
    }
}

#[test]
fn psh_in_the_middle_closes_the_superframe() {
    let mut frames = flow(Tcp::default(), 4, false, 7);
    let t = Tcp {
        seq: 1000 + MSS as u32,
        ip_id: 101,
        psh: true,
        ..Tcp::default()
    };
    frames[1] = tcp4(&t, tcp_payload(&frames[1]));
    let mut c = Coalescer::new(4);
    let mut out = Out::new();
    let r = push_all(&mut c, &frames, &mut out);
    assert_eq!(
        r,
        vec![
            PushOutcome::Started,
            PushOutcome::Merged,
            PushOutcome::Started,
            PushOutcome::Merged
        ]
    );
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1[34 + 13] & 0x08, 0x08, "PSH carried by the superframe");
    assert_eq!(single_frames(&out), frames);
}

#[test]
fn short_segment_is_last() {
    let mut frames = flow(Tcp::default(), 5, false, 8);
    let t = Tcp {
        seq: 1000 + 3 * MSS as u32,
        ip_id: 103,
        ..Tcp::default()
    };
    frames[3] = tcp4(&t, &payload(500, 9));
    let t = Tcp {
        seq: 1000 + 3 * MSS as u32 + 500,
        ip_id: 104,
        ..Tcp::default()
    };
    frames[4] = tcp4(&t, &payload(MSS, 10));
    let mut c = Coalescer::new(4);
    let mut out = Out::new();
    let r = push_all(&mut c, &frames, &mut out);
    assert_eq!(
        r[..4],
        [
            PushOutcome::Started,
            PushOutcome::Merged,
            PushOutcome::Merged,
            PushOutcome::Merged
        ]
    );
    assert_eq!(r[4], PushOutcome::Started);
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.len(), 54 + 3 * MSS + 500);
    assert_eq!(single_frames(&out), frames);
}

#[test]
fn bad_checksum_passes_through_unchanged_in_order() {
    let mut frames = flow(Tcp::default(), 3, false, 11);
    frames[1][100] ^= 0x01;
    let mut c = Coalescer::new(4);
    let mut out = Out::new();
    let r = push_all(&mut c, &frames, &mut out);
    assert_eq!(r[1], PushOutcome::PassedThrough(Bypass::BadChecksum));
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 3);
    assert_eq!(out[1], (VirtioNetHdr::default(), frames[1].clone()));
    assert_eq!(out.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(), frames);

    // A bad IPv4 header checksum too.
    let mut f = flow(Tcp::default(), 1, false, 12).remove(0);
    f[24] ^= 0xff;
    assert_eq!(
        c.push(&f, |_, _| {}),
        PushOutcome::PassedThrough(Bypass::BadChecksum)
    );
}

#[test]
fn flags_and_pure_acks_flush_the_flow_first() {
    let frames = flow(Tcp::default(), 2, false, 13);
    let fin = tcp4(
        &Tcp {
            seq: 1000 + 2 * MSS as u32,
            ip_id: 102,
            fin: true,
            ..Tcp::default()
        },
        &[],
    );
    let mut c = Coalescer::new(4);
    let mut out = Out::new();
    push_all(&mut c, &frames, &mut out);
    assert_eq!(
        c.push(&fin, sink(&mut out)),
        PushOutcome::PassedThrough(Bypass::Flags)
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
    assert_eq!(out[1].1, fin);
    let ack = tcp4(&Tcp::default(), &[]);
    assert_eq!(
        c.push(&ack, sink(&mut out)),
        PushOutcome::PassedThrough(Bypass::NoPayload)
    );
    let udp = udp4(1, 2, &[1, 2, 3]);
    assert_eq!(
        c.push(&udp, sink(&mut out)),
        PushOutcome::PassedThrough(Bypass::NotTcp)
    );
    assert_eq!(out.last().unwrap().1, udp);
}

#[test]
fn pool_full_evicts_oldest() {
    let a = flow(
        Tcp {
            sport: 1,
            ..Tcp::default()
        },
        2,
        false,
        14,
    );
    let b = flow(
        Tcp {
            sport: 2,
            ..Tcp::default()
        },
        2,
        false,
        15,
    );
    let mut c = Coalescer::new(1);
    let mut out = Out::new();
    push_all(&mut c, &a, &mut out);
    assert!(out.is_empty());
    push_all(&mut c, &b, &mut out);
    assert_eq!(out.len(), 1);
    c.flush(sink(&mut out));
    assert_eq!(single_frames(&out), [a, b].concat());

    let mut none = Coalescer::new(0);
    assert_eq!(
        none.push(&flow(Tcp::default(), 1, false, 0)[0], |_, _| {}),
        PushOutcome::PassedThrough(Bypass::NoSlots)
    );
}

#[test]
fn never_exceeds_64k() {
    let frames = flow(Tcp::default(), 50, false, 16);
    let mut c = Coalescer::new(2);
    let mut out = Out::new();
    push_all(&mut c, &frames, &mut out);
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(_, f)| f.len() <= MAX_SUPERFRAME_LEN));
    assert_eq!(out[0].1.len(), 54 + 45 * MSS);
    assert_eq!(single_frames(&out), frames);
}

#[test]
fn gso_then_gro_round_trip() {
    let data = payload(30_000, 17);
    let t = Tcp {
        psh: true,
        timestamps: Some((5, 6)),
        ..Tcp::default()
    };
    for v6 in [false, true] {
        let sf = if v6 { tcp6(&t, &data) } else { tcp4(&t, &data) };
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            },
            gso_size: 1400,
            ..VirtioNetHdr::default()
        };
        let segs = resegment(&hdr, &sf);
        assert_eq!(segs.len(), 22);
        let mut c = Coalescer::new(2);
        let mut out = Out::new();
        push_all(&mut c, &segs, &mut out);
        c.flush(sink(&mut out));
        assert_eq!(out.len(), 1);
        let (h, f) = &out[0];
        assert_eq!(h.gso_size, 1400);
        assert_eq!(tcp_payload(f), &data[..]);
        assert_eq!(
            f[h.csum_start as usize + 13] & 0x08,
            0x08,
            "PSH of the last segment kept"
        );
        assert_eq!(resegment(h, f), segs);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut c = Coalescer::new(2);
        for f in &frames {
            c.push(f, |_, _| {});
        }
        c.flush(|_, _| {});
    }

    #[test]
    fn corrupted_segments_never_panic(idx in any::<prop::sample::Index>(), flip in 1u8.., n in 1usize..6, cut in any::<prop::sample::Index>()) {
        let mut frames = flow(Tcp { timestamps: Some((1, 1)), ..Tcp::default() }, n, n % 2 == 0, 0);
        let k = idx.index(frames.len());
        let i = idx.index(frames[k].len());
        frames[k][i] ^= flip;
        let keep = cut.index(frames[k].len() + 1);
        frames[k].truncate(keep);
        let mut c = Coalescer::new(2);
        let mut out = Out::new();
        push_all(&mut c, &frames, &mut out);
        c.flush(sink(&mut out));
    }

    /// Per-flow order is preserved whatever mix of gaps, PSH, short segments, corruption and interleaving.
    #[test]
    fn per_flow_order_preserved(
        ops in proptest::collection::vec((0usize..3, 0u8..8, any::<u8>()), 1..60),
        slots in 0usize..4,
    ) {
        let mut seq = [1000u32, 5000, 9000];
        let mut id = [10u16, 20, 30];
        let mut pushed: Vec<(usize, Vec<u8>)> = Vec::new();
        for (fl, kind, salt) in ops {
            let len = if kind == 1 { 300 } else if kind == 7 { 0 } else { MSS };
            if kind == 2 { seq[fl] = seq[fl].wrapping_add(7); } // gap
            let t = Tcp { sport: fl as u16 + 1, seq: seq[fl], ip_id: id[fl], psh: kind == 3, ..Tcp::default() };
            let mut f = if fl == 2 { tcp6(&t, &payload(len, salt)) } else { tcp4(&t, &payload(len, salt)) };
            if kind == 4 { let l = f.len(); f[l - 1] ^= 0x40; }
            seq[fl] = seq[fl].wrapping_add(len as u32);
            id[fl] = id[fl].wrapping_add(1);
            pushed.push((fl, f));
        }
        let mut c = Coalescer::new(slots);
        let mut out = Out::new();
        for (_, f) in &pushed {
            c.push(f, sink(&mut out));
        }
        c.flush(sink(&mut out));
        let got = single_frames(&out);
        prop_assert_eq!(got.len(), pushed.len());
        let sport = |f: &[u8]| {
            let h = crate::offload::headers::parse(f).unwrap();
            u16::from_be_bytes([f[h.l4_off], f[h.l4_off + 1]])
        };
        for fl in 0..3 {
            let want: Vec<&Vec<u8>> = pushed.iter().filter(|(g, _)| *g == fl).map(|(_, f)| f).collect();
            let have: Vec<&Vec<u8>> = got.iter().filter(|f| usize::from(sport(f)) == fl + 1).collect();
            prop_assert_eq!(have, want);
        }
    }
}

#[test]
fn all_ones_addresses_do_not_overflow() {
    for v6 in [false, true] {
        let mut frames = flow(Tcp::default(), 2, v6, 18);
        for f in &mut frames {
            let (at, n) = if v6 { (22, 32) } else { (26, 8) };
            f[at..at + n].fill(0xff);
        }
        let mut c = Coalescer::new(1);
        let mut out = Out::new();
        push_all(&mut c, &frames, &mut out);
        c.flush(sink(&mut out));
        // Checksums are now wrong, so both pass through unchanged.
        assert_eq!(out.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(), frames);
    }
}

#[test]
fn fragment_or_extension_header_flushes_everything_first() {
    let frames = flow(Tcp::default(), 2, false, 19);
    let mut frag = flow(
        Tcp {
            seq: 1000 + 2 * MSS as u32,
            ip_id: 102,
            ..Tcp::default()
        },
        1,
        false,
        20,
    )
    .remove(0);
    frag[20] |= 0x20; // MF
    let mut c = Coalescer::new(2);
    let mut out = Out::new();
    push_all(&mut c, &frames, &mut out);
    assert_eq!(
        c.push(&frag, sink(&mut out)),
        PushOutcome::PassedThrough(Bypass::NotTcp)
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
    assert_eq!(out[1].1, frag);
    assert_eq!(c.pending(), 0);

    let mut ext = flow(Tcp::default(), 1, true, 21).remove(0);
    ext[20] = 0; // hop-by-hop
    push_all(&mut c, &flow(Tcp::default(), 1, true, 22), &mut out);
    assert_eq!(c.pending(), 1);
    c.push(&ext, sink(&mut out));
    assert_eq!(c.pending(), 0);
    assert_eq!(out.last().unwrap().1, ext);
}

/// What a kernel sender with TX checksum offload on a veth leaves in the frame: the TCP/UDP checksum field
/// holds the folded pseudo-header sum (computed here with the independent naive sum).
fn make_partial(mut f: Vec<u8>) -> Vec<u8> {
    let v6 = u16::from_be_bytes([f[12], f[13]]) == 0x86dd;
    let (l4, src, dst, proto): (usize, &[u8], &[u8], u8) = if v6 {
        (54, &SRC6, &DST6, f[20])
    } else {
        (34, &SRC4, &DST4, f[23])
    };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    let len = ((f.len() - l4) as u32).to_be_bytes();
    let p = naive_sum(&[src, dst, &[0, proto], &len[..]]);
    f[at..at + 2].copy_from_slice(&p.to_be_bytes());
    f
}

#[test]
fn partial_segments_coalesce_and_complete() {
    for v6 in [false, true] {
        let frames = flow(Tcp::default(), 6, v6, 40);
        let partial: Vec<Vec<u8>> = frames.iter().cloned().map(make_partial).collect();
        assert!(
            partial.iter().all(|f| !checksums_ok(f)),
            "partial frames do not verify"
        );
        let mut c = Coalescer::new(2);
        let mut out = Out::new();
        // Mixed: a verified segment followed by partial ones, as after a `tx` offload change.
        let mut mixed = partial.clone();
        mixed[0] = frames[0].clone();
        let r = push_all(&mut c, &mixed, &mut out);
        assert_eq!(r[0], PushOutcome::Started);
        assert!(r[1..].iter().all(|r| *r == PushOutcome::Merged), "{r:?}");
        c.flush(sink(&mut out));
        assert_eq!(out.len(), 1);
        let (h, f) = &out[0];
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        // Completed by the kernel (here: gso::segment), every segment verifies and equals the original.
        assert_eq!(resegment(h, f), frames, "v6={v6}");
    }
}

#[test]
fn lone_partial_segment_needs_csum_not_data_valid() {
    let f = make_partial(flow(Tcp::default(), 1, false, 41).remove(0));
    let mut c = Coalescer::new(2);
    let mut out = Out::new();
    assert_eq!(c.push(&f, sink(&mut out)), PushOutcome::Started);
    c.flush(sink(&mut out));
    let (h, g) = &out[0];
    assert_eq!(g, &f, "written unchanged");
    assert_eq!(
        *h,
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_NONE,
            hdr_len: 54,
            gso_size: 0,
            csum_start: 34,
            csum_offset: 16
        }
    );
    // A verified lone segment still goes out as DATA_VALID.
    let full = flow(Tcp::default(), 1, false, 41).remove(0);
    c.push(&full, sink(&mut out));
    c.flush(sink(&mut out));
    assert_eq!(out[1].0.flags, VIRTIO_NET_HDR_F_DATA_VALID);
}

#[test]
fn partial_pass_through_frames_get_needs_csum() {
    let mut c = Coalescer::new(2);
    let mut out = Out::new();
    // Pure ACK (no payload), FIN, UDP over IPv4 and IPv6: passed through, NEEDS_CSUM at the right field.
    let ack = make_partial(tcp4(&Tcp::default(), &[]));
    let fin = make_partial(tcp6(
        &Tcp {
            fin: true,
            ..Tcp::default()
        },
        &[1, 2, 3],
    ));
    let u4 = make_partial(udp4(1000, 2000, b"abc"));
    let u6 = make_partial(udp6(1000, 2000, b"abcd"));
    let cases = [
        (&ack, Bypass::NoPayload, 34, 16),
        (&fin, Bypass::Flags, 54, 16),
        (&u4, Bypass::NotTcp, 34, 6),
        (&u6, Bypass::NotTcp, 54, 6),
    ];
    for (f, why, start, off) in cases {
        assert_eq!(c.push(f, sink(&mut out)), PushOutcome::PassedThrough(why));
        let (h, g) = out.last().unwrap();
        assert_eq!(g, f);
        assert_eq!(
            (h.flags, h.gso_type, h.csum_start, h.csum_offset),
            (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, start, off),
            "{why:?}"
        );
    }
    // The same frames with real checksums keep a plain header.
    for f in [tcp4(&Tcp::default(), &[]), udp4(1000, 2000, b"abc")] {
        c.push(&f, sink(&mut out));
        assert_eq!(out.last().unwrap().0, VirtioNetHdr::default());
    }
}

/// The payload of a superframe is never copied: every payload iovec points into the receive region, and only
/// the virtio header and the (rewritten) header block come from elsewhere.
#[test]
fn superframe_payload_is_gathered_from_the_region() {
    let frames = flow(Tcp::default(), 10, false, 21);
    let region: Vec<u8> = frames.concat();
    let mut c = super::Coalescer::new(2);
    let r = Region::new(&region, 1);
    let mut at = 0;
    for f in &frames {
        assert_ne!(
            c.push(r, at..at + f.len(), |_| panic!("nothing emitted yet")),
            PushOutcome::PassedThrough(Bypass::NotTcp)
        );
        at += f.len();
    }
    let base = region.as_ptr() as usize;
    let mut writes = 0;
    c.flush(r, |iov| {
        writes += 1;
        assert_eq!(iov.len(), 2 + 10, "virtio header, headers, one iovec per segment");
        assert_eq!(iov[0].len(), VIRTIO_NET_HDR_LEN);
        assert_eq!(iov[1].len(), 54);
        for (k, p) in iov[2..].iter().enumerate() {
            let at = p.as_ptr() as usize;
            assert!(
                at >= base && at + p.len() <= base + region.len(),
                "payload {k} not in the region"
            );
            assert_eq!(&p[..], tcp_payload(&frames[k]));
        }
    });
    assert_eq!(writes, 1);
}

/// A flush (or push) under another epoch drops what is pending instead of gathering refilled bytes.
#[test]
fn refilled_region_is_never_written() {
    let frames = flow(Tcp::default(), 3, false, 22);
    let mut region: Vec<u8> = frames.concat();
    let mut c = super::Coalescer::new(2);
    let mut at = 0;
    for f in &frames {
        c.push(Region::new(&region, 1), at..at + f.len(), |_| {
            panic!("nothing emitted yet")
        });
        at += f.len();
    }
    assert_eq!(c.pending(), 1);
    region.fill(0xee); // the next recvmmsg
    c.flush(Region::new(&region, 2), |_| panic!("stale superframe written"));
    assert_eq!((c.pending(), c.stale_drops()), (0, 3));
    // The coalescer keeps working under the new epoch.
    let region: Vec<u8> = frames.concat();
    let mut at = 0;
    for f in &frames {
        c.push(Region::new(&region, 3), at..at + f.len(), |_| {});
        at += f.len();
    }
    let mut out = Out::new();
    c.flush(Region::new(&region, 3), |iov| unvec(&mut sink(&mut out), iov));
    assert_eq!(out.len(), 1);
    assert_eq!(resegment(&out[0].0, &out[0].1), frames);
}

/// A range outside the region is not a frame: passed over, nothing written.
#[test]
fn range_outside_the_region_is_ignored() {
    let region = vec![0u8; 100];
    let mut c = super::Coalescer::new(2);
    assert_eq!(
        c.push(Region::new(&region, 1), 50..150, |_| panic!("written")),
        PushOutcome::PassedThrough(Bypass::NotTcp)
    );
}

/// With a small MSS the superframe closes at MAX_SEGMENTS segments (one writev stays far below UIO_MAXIOV).
#[test]
fn at_most_max_segments_per_superframe() {
    let mss = 100;
    let n = MAX_SEGMENTS + 5;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let t = Tcp {
                seq: 1000 + (i * mss) as u32,
                ip_id: 100 + i as u16,
                ..Tcp::default()
            };
            tcp4(&t, &payload(mss, i as u8))
        })
        .collect();
    let mut c = Coalescer::new(2);
    let mut out = Out::new();
    push_all(&mut c, &frames, &mut out);
    assert_eq!(out.len(), 1, "the first superframe closed at the limit");
    c.flush(sink(&mut out));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.len(), 54 + MAX_SEGMENTS * mss);
    assert_eq!(single_frames(&out), frames);
}

/// `push` and `flush` never allocate: merged superframes, evictions, pass-through frames and partial
/// checksums, all gathered from one region.
#[test]
fn push_and_flush_do_not_allocate() {
    use crate::io::testns::alloc_count::allocations;
    let mut frames = Vec::new();
    for sport in 1..=3u16 {
        frames.extend(flow(
            Tcp {
                sport,
                ..Tcp::default()
            },
            20,
            sport == 2,
            sport as u8,
        ));
    }
    frames.push(make_partial(flow(Tcp::default(), 1, false, 9).remove(0)));
    frames.push(udp4(1, 2, &[1, 2, 3]));
    frames.push(tcp4(&Tcp::default(), &[]));
    let region: Vec<u8> = frames.concat();
    let mut ranges = Vec::new();
    let mut at = 0;
    for f in &frames {
        ranges.push(at..at + f.len());
        at += f.len();
    }
    let mut c = super::Coalescer::new(2); // 3 flows over 2 slots: evictions too
    let mut bytes = 0usize;
    let before = allocations();
    for epoch in 0..50 {
        let r = Region::new(&region, epoch);
        for f in &ranges {
            c.push(r, f.clone(), |iov| {
                bytes += iov.iter().map(|s| s.len()).sum::<usize>()
            });
        }
        c.flush(r, |iov| bytes += iov.iter().map(|s| s.len()).sum::<usize>());
    }
    assert_eq!(allocations() - before, 0, "the coalescer allocated");
    assert!(bytes > 50 * 60 * MSS);
    assert_eq!(c.stale_drops(), 0);
}
