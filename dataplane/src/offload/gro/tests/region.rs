//! The gather contract: payload is never copied out of the receive region, a refilled region is never read,
//! a superframe stays within the iovec limit, and push/flush never allocate.

use super::*;

/// The payload of a superframe is never copied: every payload iovec points into the receive region, and only
/// the virtio header and the (rewritten) header block come from elsewhere.
#[test]
fn superframe_payload_is_gathered_from_the_region() {
    let frames = flow(Tcp::default(), 10, false, 21);
    let region: Vec<u8> = frames.concat();
    let mut c = super::super::Coalescer::new(2);
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
    let mut c = super::super::Coalescer::new(2);
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
    let mut c = super::super::Coalescer::new(2);
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
    let mut c = super::super::Coalescer::new(2); // 3 flows over 2 slots: evictions too
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
