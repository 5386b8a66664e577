//! Which segments merge into one superframe and which close it or pass through (flow, order, gaps, flags,
//! options, PSH, short segments, bad checksums, the flow table, the 64 KiB cap, fragments, GSO round trip).

use super::*;

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
