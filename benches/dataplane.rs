//! Criterion benches for the data plane hot path: VXLAN encap/decap at 64 B, 1500 B and 64 KiB; FDB lookups at
//! 10^2…10^6 entries; the engine's forward loop; and a check that the hot path does not allocate
//! (`allocation-counter`'s counting allocator; the bench panics if a single allocation happens in the loop).
//! Offload (segmentation/coalescing) benches live in `benches/offload.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench panics loudly on a broken setup

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::engine::{Engine, EngineConfig, PeerSet, TxAction};
use dataplane::fdb::{Fdb, Origin};
use dataplane::wire::{vxlan, MacAddr, Vni};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

const VNI: u32 = 42;

fn ip(n: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000u32 | n).to_be_bytes())
}
fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([2, 0, b[0], b[1], b[2], b[3]])
}

fn frame(len: usize, dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

fn engine(now: Instant, peers: u32, fdb_size: u32) -> (Engine, Arc<Fdb>) {
    let fdb = Arc::new(Fdb::new(fdb_size as usize + 16, Fdb::DEFAULT_AGEING, now));
    for i in 0..fdb_size {
        fdb.learn(mac(1000 + i), ip(2 + i % peers.max(1)), Origin::Learned, now);
    }
    let set = Arc::new(PeerSet::new((0..peers).map(|i| ip(2 + i))));
    let mut cfg = EngineConfig::new(Vni::new(VNI).unwrap(), ip(1));
    // The broadcast rate limiter runs on every flooded frame (and is part of the no-allocation proof) but
    // never refuses: the benches send one source's broadcasts back to back.
    cfg.bum_pps = u32::MAX;
    let e = Engine::new(cfg, fdb.clone(), set, Arc::default());
    (e, fdb)
}

fn encap_decap(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("vxlan");
    for len in [64usize, 1500, 65_536] {
        let f = frame(len, mac(1000), mac(1));
        g.throughput(Throughput::Bytes(len as u64));
        // Encap = engine decision + header copy + frame copy into a send buffer (what the worker does).
        let (mut e, _) = engine(now, 3, 16);
        let mut out = TxAction::default();
        let mut buf = vec![0u8; len + 8];
        g.bench_with_input(BenchmarkId::new("encap", len), &f, |b, f| {
            b.iter(|| {
                e.on_tap_frame(now, black_box(f), &mut out).unwrap();
                buf[..8].copy_from_slice(e.header());
                buf[8..].copy_from_slice(f);
                black_box(&buf);
            })
        });
        let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
        d.extend_from_slice(&frame(len, mac(1), mac(1000)));
        let (mut e, _) = engine(now, 3, 16);
        let src = SocketAddr::new(ip(2), 4789);
        g.bench_with_input(BenchmarkId::new("decap", len), &d, |b, d| {
            b.iter(|| black_box(e.on_underlay_datagram(now, src, black_box(d)).unwrap()))
        });
    }
    g.finish();
}

fn fdb_lookup(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("fdb_lookup");
    for n in [100u32, 10_000, 1_000_000] {
        let (_, fdb) = engine(now, 8, n);
        let mut i = 0u32;
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(fdb.lookup(&mac(1000 + i), now))
            })
        });
    }
    g.finish();
}

/// The forward loop: 64 frames to known unicast MACs spread over 8 peers, plus learning their sources.
fn engine_loop(c: &mut Criterion) {
    let now = Instant::now();
    let (mut e, _) = engine(now, 8, 1024);
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| frame(1500, mac(1000 + i * 13 % 1024), mac(1 + i % 4)))
        .collect();
    let mut out = TxAction::default();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("forward_64_frames", |b| {
        b.iter(|| {
            for f in &frames {
                e.on_tap_frame(now, f, &mut out).unwrap();
                black_box(&out.dests);
            }
        })
    });
    g.finish();
}

/// Proves the hot path does not allocate: TX (unicast and flood) and RX (decap + learn) in a loop, with the
/// global allocator counting. Panics — failing `cargo bench` — on any allocation.
fn no_alloc(c: &mut Criterion) {
    let now = Instant::now();
    let (mut e, _) = engine(now, 8, 1024);
    let uni = frame(1500, mac(1000), mac(1));
    let bcast = frame(60, MacAddr::BROADCAST, mac(1));
    let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
    d.extend_from_slice(&frame(1500, mac(1), mac(1001)));
    let src = SocketAddr::new(ip(3), 4789);
    let mut out = TxAction::default();
    // Warm-up: the reused `dests` vector reaches its capacity.
    e.on_tap_frame(now, &bcast, &mut out).unwrap();
    let info = allocation_counter::measure(|| {
        for _ in 0..100_000 {
            e.on_tap_frame(now, &uni, &mut out).unwrap();
            e.on_tap_frame(now, &bcast, &mut out).unwrap();
            e.on_underlay_datagram(now, src, &d).unwrap();
        }
    });
    let allocs = info.count_total;
    println!("hot path allocations over 300000 frames: {allocs}");
    assert_eq!(allocs, 0, "the forwarding hot path allocated");
    c.bench_function("hot_path_no_alloc/tx_uni+tx_flood+rx", |b| {
        b.iter(|| {
            e.on_tap_frame(now, &uni, &mut out).unwrap();
            e.on_tap_frame(now, &bcast, &mut out).unwrap();
            black_box(e.on_underlay_datagram(now, src, &d).unwrap());
        })
    });
}

criterion_group!(benches, encap_decap, fdb_lookup, engine_loop, no_alloc);
criterion_main!(benches);
