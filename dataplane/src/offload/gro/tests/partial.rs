//! Partial checksums (a kernel sender with TX checksum offload): merged and lone segments carry the right
//! virtio flags and a checksum that completes correctly.

use super::*;

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
