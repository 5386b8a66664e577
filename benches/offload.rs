//! Criterion benches for the TAP offload byte work: TSO superframe segmentation (`offload::segment_sg`, the TX
//! hot path: one call per TAP read; `offload::segment`, its copying variant), the Internet checksum
//! (`offload::checksum::sum` against the one-lane loop it replaced) and TCP receive coalescing (`offload::Coalescer`, the RX hot path: one `push`
//! per decapsulated segment). Frames are built once with etherparse (valid checksums, TCP timestamps as Linux
//! sends them); the measured loops only call the dataplane.
//!
//! MSS 1448 is a 1500-byte Ethernet MTU with timestamps, MSS 1398 the 1450-byte inner MTU of a VXLAN overlay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench panics loudly on a broken setup

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::offload::checksum::{fold, sum};
use dataplane::offload::{
    segment, segment_sg, Coalescer, VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN,
};
use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, TcpOptionElement};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const SRC4: [u8; 4] = [10, 1, 0, 1];
const DST4: [u8; 4] = [10, 1, 0, 2];
/// Ethernet (14) + IPv4 (20): where the TCP header starts.
const L4_OFF: usize = 34;
/// TCP header with NOP, NOP, timestamp.
const TCP_HLEN: usize = 32;
const VXLAN_PREFIX: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];
/// Big enough for any segmentation of a 64 KiB superframe (payload + per-segment headers).
const OUT_LEN: usize = 2 * 65_536;

/// One Ethernet/IPv4/TCP frame with ACK (and optionally PSH), timestamps and correct checksums.
fn tcp4_frame(seq: u32, ip_id: u16, payload: &[u8], psh: bool) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, SRC4, DST4).unwrap();
    ip.identification = ip_id;
    ip.dont_fragment = true;
    let mut tcp = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(40_000, 5201, seq, 512)
        .ack(77)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(1, 2),
        ])
        .unwrap();
    if psh {
        tcp = tcp.psh();
    }
    let mut v = Vec::with_capacity(L4_OFF + TCP_HLEN + payload.len());
    tcp.write(&mut v, payload).unwrap();
    v
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31)).collect()
}

fn bench_segment(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment");
    let mut out = vec![0u8; OUT_LEN];

    // 1500-byte frame (MSS 1448 of payload), no GSO, checksum left to us (NEEDS_CSUM): the kernel hands these
    // to the TAP for small writes and for the last bytes of a burst.
    {
        let mut frame = tcp4_frame(1000, 1, &payload(1448), true);
        assert_eq!(frame.len(), 1514);
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_NONE,
            csum_start: L4_OFF as u16,
            csum_offset: 16,
            ..VirtioNetHdr::default()
        };
        // The checksum field must hold the pseudo-header sum; any value costs the same, but restore it each
        // round so every iteration does identical work.
        let csum_at = L4_OFF + 16;
        let orig = [frame[csum_at], frame[csum_at + 1]];
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function("1500B_single_csum", |b| {
            b.iter(|| {
                frame[csum_at..csum_at + 2].copy_from_slice(&orig);
                let s = segment(&hdr, black_box(&mut frame), &VXLAN_PREFIX, &mut out).unwrap();
                black_box(s)
            })
        });
    }

    // 64 KiB TCPv4 superframes as a TSO-enabled TAP delivers them.
    for (mss, segs) in [(1398usize, 46usize), (1448, 45)] {
        let mut frame = tcp4_frame(1000, 1, &payload(mss * segs), true);
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: (L4_OFF + TCP_HLEN) as u16,
            gso_size: mss as u16,
            csum_start: L4_OFF as u16,
            csum_offset: 16,
        };
        let s = segment(&hdr, &mut frame, &VXLAN_PREFIX, &mut out).unwrap();
        assert_eq!(s.count, segs);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("64KiB_tcp4_superframe_mss", mss),
            &mss,
            |b, _| {
                // segment() only zeroes the template's checksum fields, so re-running it on the same frame is
                // the same work every time.
                b.iter(|| black_box(segment(&hdr, black_box(&mut frame), &VXLAN_PREFIX, &mut out).unwrap()))
            },
        );
        // The TX path's scatter-gather variant: only the headers are written, payloads are summed in place.
        g.bench_with_input(
            BenchmarkId::new("64KiB_tcp4_superframe_sg_mss", mss),
            &mss,
            |b, _| {
                b.iter(|| {
                    black_box(segment_sg(&hdr, black_box(&mut frame), &VXLAN_PREFIX, &mut out).unwrap())
                })
            },
        );
    }
    g.finish();
}

/// The pre-2026-11-30 `checksum::sum`: one big-endian 8-byte word per step into one `u64` with end-around
/// carry (a serial carry chain), kept here as the baseline the lane version is measured against.
fn sum_one_lane(data: &[u8], initial: u64) -> u64 {
    let add = |a: u64, b: u64| {
        let (s, c) = a.overflowing_add(b);
        s + u64::from(c)
    };
    let mut acc = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc = add(acc, u64::from_be_bytes(c.try_into().unwrap()));
    }
    let rest = chunks.remainder();
    let mut w = [0u8; 8];
    w[..rest.len()].copy_from_slice(rest);
    add(acc, u64::from_be_bytes(w))
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    let data = payload(65_536 + 1);
    for len in [40usize, 1398, 1448, 65_536] {
        // Offset 1: the payload of a segment is rarely 8-byte aligned.
        let d = &data[1..1 + len];
        assert_eq!(fold(sum(d, 7)), fold(sum_one_lane(d, 7)));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("sum", len), &len, |b, _| {
            b.iter(|| black_box(sum(black_box(d), 0)))
        });
        g.bench_with_input(BenchmarkId::new("sum_one_lane_old", len), &len, |b, _| {
            b.iter(|| black_box(sum_one_lane(black_box(d), 0)))
        });
    }
    g.finish();
}

fn bench_coalesce(c: &mut Criterion) {
    let mut g = c.benchmark_group("coalesce");
    for (mss, n) in [(1398usize, 46usize), (1448, 45)] {
        let data = payload(mss);
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| tcp4_frame(1000 + (i * mss) as u32, 1 + i as u16, &data, i == n - 1))
            .collect();
        let bytes: usize = frames.iter().map(Vec::len).sum();
        let mut gro = Coalescer::new(8);
        // Setup check: all segments end up in exactly one superframe.
        let mut emitted = Vec::new();
        for f in &frames {
            gro.push(f, |h, f| emitted.push((*h, f.len())));
        }
        gro.flush(|h, f| emitted.push((*h, f.len())));
        assert_eq!(emitted.len(), 1, "expected one superframe");
        assert_eq!(emitted[0].0[1], VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(emitted[0].1, L4_OFF + TCP_HLEN + n * mss);
        assert_eq!(emitted[0].0.len(), VIRTIO_NET_HDR_LEN);

        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(
            BenchmarkId::new("tcp4_segments_to_superframe_mss", mss),
            &mss,
            |b, _| {
                b.iter(|| {
                    let mut out = 0usize;
                    for f in &frames {
                        gro.push(black_box(f), |_, f| out += f.len());
                    }
                    gro.flush(|_, f| out += f.len());
                    black_box(out)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_segment, bench_coalesce, bench_checksum);
criterion_main!(benches);
