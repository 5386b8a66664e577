use super::*;
use crate::offload::checksum;
use crate::offload::testutil::{checksums_ok, payload, tcp4, tcp6, Tcp, DST6, SRC6};
use crate::offload::{
    segment, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_LEN,
};
use proptest::prelude::*;
use std::sync::atomic::Ordering::Relaxed;

const PREFIX: [u8; VXLAN_HEADER_LEN] = [0x08, 0, 0, 0, 0, 0x01, 0x2c, 0];

fn dst(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 4789))
}

fn tso(gso_type: u8, mss: u16) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: 0,
        gso_size: mss,
        csum_start: 0,
        csum_offset: 16,
    }
}

/// Put a TAP read (virtio header + frame) into the spare area after the headroom, as the worker does; the
/// frame's range in the spare area.
fn read_into(send: &mut SendBatch, frame: &[u8]) -> Range<usize> {
    let at = HEADROOM + VIRTIO_NET_HDR_LEN;
    send.spare()[HEADROOM..at].fill(0xee);
    send.spare()[at..at + frame.len()].copy_from_slice(frame);
    at..at + frame.len()
}

/// What the copying path sends: `segment`'s output cut into messages the old way.
fn copying(hdr: &VirtioNetHdr, frame: &[u8], udp_gso: bool) -> Vec<(Vec<u8>, u16)> {
    let mut f = frame.to_vec();
    let mut out = vec![0u8; 300_000];
    let s = segment(hdr, &mut f, &PREFIX, &mut out).unwrap();
    let per_msg = segments_per_message(s.stride, udp_gso);
    crate::worker::gso_messages(0..s.total_len, s.stride, per_msg)
        .map(|(r, g)| (out[r].to_vec(), g))
        .collect()
}

#[test]
fn messages_split_at_per_msg_segments() {
    let m: Vec<_> = messages(10, 100, 4).collect();
    assert_eq!(m, vec![(0..4, 100), (4..8, 100), (8..10, 100)]);
    let m: Vec<_> = messages(9, 100, 4).collect();
    assert_eq!(m, vec![(0..4, 100), (4..8, 100), (8..9, 0)]);
    let m: Vec<_> = messages(3, 100, 1).collect();
    assert_eq!(m, vec![(0..1, 0), (1..2, 0), (2..3, 0)]);
    assert_eq!(messages(0, 100, 4).count(), 0);
    assert_eq!(messages(2, 100, 0).count(), 2);
    // A stride that does not fit UDP_SEGMENT's u16 is only ever sent one segment per message.
    assert_eq!(segments_per_message(70_000, true), 1);
    assert_eq!(segments_per_message(1472, true), 44);
    assert_eq!(segments_per_message(100, true), MAX_GSO_SEGMENTS);
    assert_eq!(segments_per_message(100, false), 1);
    assert_eq!(pieces_of(2..4, 10, 100), 14..18);
    assert_eq!(pieces_of(2..4, 10, 17), 14..17);
}

#[test]
fn superframe_is_sent_scatter_gather_like_the_copying_path() {
    let t = Tcp {
        timestamps: Some((1, 2)),
        psh: true,
        ..Tcp::default()
    };
    let data = payload(63_000, 4);
    let frame = tcp4(&t, &data);
    let hdr = tso(VIRTIO_NET_HDR_GSO_TCPV4, 1398);
    for udp_gso in [true, false] {
        let want = copying(&hdr, &frame, udp_gso);
        let mut send = SendBatch::with_pieces(1 << 20, 4096, 8192);
        // Something queued before, so the frame does not start at offset 0.
        let r = send.commit(100);
        assert!(send.push(dst(9), r, 0));
        let f = read_into(&mut send, &frame);
        let c = Counters::default();
        let mut flushes = 0;
        let dests = [dst(1), dst(2)];
        queue_frame(&mut send, f, &hdr, &PREFIX, &dests, 3, udp_gso, &c, |_| {
            flushes += 1
        })
        .unwrap();
        assert_eq!(flushes, 0);
        assert_eq!(send.len(), 1 + 2 * want.len());
        for (d, k) in dests.iter().zip([0, 1]) {
            for (j, (bytes, g)) in want.iter().enumerate() {
                let (sock, to, got, gso) = send.message(1 + k * want.len() + j);
                assert_eq!((sock, to, gso), (3, *d, *g));
                assert_eq!(&got, bytes, "message {j} to {d}");
            }
        }
        // The payload was not copied: the payload pieces point into the read.
        let segs = data.len().div_ceil(1398);
        assert_eq!(send.pieces_len(), 1 + 2 * segs);
        assert_eq!(c.rx_frames.load(Relaxed), segs as u64);
        assert_eq!(c.tx_datagrams.load(Relaxed), 2 * segs as u64);
        assert_eq!(c.rx_bytes.load(Relaxed), (frame.len() - 66 + segs * 66) as u64);
    }
}

#[test]
fn whole_frame_is_one_piece_with_the_header_in_front() {
    let mut frame = tcp6(&Tcp::default(), &payload(1200, 1));
    // As the kernel hands it over: the checksum field holds the pseudo-header sum.
    let l4_len = frame.len() - 54;
    let ps = checksum::fold(checksum::pseudo_header_v6(SRC6, DST6, 6, l4_len as u32));
    frame[54 + 16..54 + 18].copy_from_slice(&ps.to_be_bytes());
    let hdr = VirtioNetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        csum_start: 54,
        ..tso(0, 0)
    };
    let mut send = SendBatch::with_pieces(1 << 17, 64, 512);
    let f = read_into(&mut send, &frame);
    let c = Counters::default();
    queue_frame(&mut send, f, &hdr, &PREFIX, &[dst(1)], 0, true, &c, |_| {}).unwrap();
    let want = copying(&hdr, &frame, true);
    assert_eq!(want.len(), 1);
    assert_eq!(send.pieces_len(), 1);
    let (_, _, got, gso) = send.message(0);
    assert_eq!((got, gso), want[0].clone());
    assert!(checksums_ok(&send.message(0).2[VXLAN_HEADER_LEN..]));
    assert_eq!(c.rx_bytes.load(Relaxed), frame.len() as u64);
}

#[test]
fn a_frame_that_does_not_fit_flushes_once_and_moves_to_the_front() {
    let data = payload(20_000, 7);
    let frame = tcp4(&Tcp::default(), &data);
    let hdr = tso(VIRTIO_NET_HDR_GSO_TCPV4, 100);
    let want = copying(&hdr, &frame, true);
    // Room for the read but not for its 200 segment headers (200 * 62 bytes) behind a 30 KB earlier message.
    let mut send = SendBatch::with_pieces(30_000 + HEADROOM + 10 + frame.len() + 5_000, 64, 1024);
    let r = send.commit(30_000);
    assert!(send.push(dst(9), r, 0));
    let f = read_into(&mut send, &frame);
    let c = Counters::default();
    let mut flushed = Vec::new();
    queue_frame(&mut send, f, &hdr, &PREFIX, &[dst(1)], 0, true, &c, |s| {
        flushed.push(s.len());
        s.clear();
    })
    .unwrap();
    assert_eq!(flushed, vec![1]);
    assert_eq!(send.len(), want.len());
    for (j, (bytes, g)) in want.iter().enumerate() {
        let (_, _, got, gso) = send.message(j);
        assert_eq!((&got, gso), (bytes, *g), "message {j}");
    }
    // Too big even for an empty batch: refused, nothing queued, no second flush.
    let mut small = SendBatch::with_pieces(HEADROOM + 10 + frame.len() + 100, 64, 1024);
    let f = read_into(&mut small, &frame);
    let e = queue_frame(&mut small, f, &hdr, &PREFIX, &[dst(1)], 0, true, &c, |_| {
        panic!("no flush")
    });
    assert!(matches!(e, Err(OffloadError::OutputTooSmall { .. })));
    assert!(small.is_empty());
}

#[test]
fn a_full_message_table_flushes_first() {
    let frame = tcp4(&Tcp::default(), &payload(10_000, 2));
    let hdr = tso(VIRTIO_NET_HDR_GSO_TCPV4, 1000);
    let want = copying(&hdr, &frame, true);
    let mut send = SendBatch::with_pieces(1 << 20, 8, 1024);
    for _ in 0..8 {
        let r = send.commit(10);
        assert!(send.push(dst(9), r, 0));
    }
    let f = read_into(&mut send, &frame);
    let c = Counters::default();
    let mut flushes = 0;
    queue_frame(&mut send, f, &hdr, &PREFIX, &[dst(1)], 0, true, &c, |s| {
        flushes += 1;
        s.clear();
    })
    .unwrap();
    assert_eq!(flushes, 1);
    assert_eq!(send.message(0).2, want[0].0);
    assert_eq!(c.drops(DropReason::SendError), 0);
    // More destinations than the table can ever hold: counted as send errors, never a panic.
    let mut tiny = SendBatch::with_pieces(1 << 20, 2, 1024);
    let f = read_into(&mut tiny, &frame);
    let dests: Vec<_> = (1..=3).map(dst).collect();
    let before = c.drops(DropReason::SendError);
    queue_frame(&mut tiny, f, &hdr, &PREFIX, &dests, 0, true, &c, |s| s.clear()).unwrap();
    // Dropped whole, for every destination: no message of it is queued.
    assert_eq!(c.drops(DropReason::SendError) - before, 3 * 10);
    assert!(tiny.is_empty());
}

#[test]
fn a_frame_with_more_pieces_than_an_empty_batch_holds_is_dropped_whole() {
    // 20 segments need 40 pieces; the batch holds 16 (as a gso_size ≤ 8 frame would overflow the real table).
    let frame = tcp4(&Tcp::default(), &payload(2_000, 3));
    let hdr = tso(VIRTIO_NET_HDR_GSO_TCPV4, 100);
    let mut send = SendBatch::with_pieces(1 << 20, 64, 16);
    let f = read_into(&mut send, &frame);
    let c = Counters::default();
    queue_frame(&mut send, f, &hdr, &PREFIX, &[dst(1)], 0, true, &c, |s| s.clear()).unwrap();
    assert_eq!(c.drops(DropReason::SendError), 20);
    assert!(send.is_empty(), "no part of the frame may be sent");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any valid TCP superframe, any MSS, with and without UDP GSO: the queued messages are byte for byte
    /// what the copying path sent, each within the kernel's limits.
    #[test]
    fn queued_messages_equal_the_copying_path(v6 in any::<bool>(), len in 0usize..66_000, mss in 500u16..9000,
                                               udp_gso in any::<bool>(), ndest in 1usize..3) {
        let data = payload(len.min(65_000 - 100), 3);
        let frame = if v6 { tcp6(&Tcp::default(), &data) } else { tcp4(&Tcp::default(), &data) };
        let hdr = tso(if v6 { VIRTIO_NET_HDR_GSO_TCPV6 } else { VIRTIO_NET_HDR_GSO_TCPV4 }, mss);
        let want = copying(&hdr, &frame, udp_gso);
        let mut send = SendBatch::with_pieces(1 << 20, 4096, 8192);
        let f = read_into(&mut send, &frame);
        let dests: Vec<_> = (1..=ndest as u8).map(dst).collect();
        queue_frame(&mut send, f, &hdr, &PREFIX, &dests, 0, udp_gso, &Counters::default(), |_| {}).unwrap();
        prop_assert_eq!(send.len(), ndest * want.len());
        for j in 0..send.len() {
            let (_, _, got, gso) = send.message(j);
            let (bytes, g) = &want[j % want.len()];
            prop_assert_eq!(&got, bytes);
            prop_assert_eq!(gso, *g);
            prop_assert!(got.len() <= MAX_GSO_PAYLOAD);
            if gso != 0 {
                prop_assert!(got.len().div_ceil(usize::from(gso)) <= MAX_GSO_SEGMENTS);
            }
        }
    }
}
