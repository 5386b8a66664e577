//! Convergence and per-node gossip cost as the cluster grows (simulator, virtual time, deterministic).
//!
//! The same scenario at N = 16 and N = 128 (`sim::scale_run`): every node starts at once with one MAC
//! and joins node 0; then, in the formed cluster, 16 nodes each get a new MAC. Printed (`--nocapture`):
//! formation time, per-MAC time until every other node holds it, and bytes sent per node per second,
//! idle and while MACs appear. N = 1000 runs in `cargo run --release -p control --features testing
//! --example converge -- 128 1000` (minutes of CPU even in release, far over a debug test's budget in CI,
//! so not here); the example prints the same growth ratio against the log N and N models.
//!
//! Asserted: the idle cost per node grows like log N, not like N: anti-entropy compares one root hash
//! per round (bucket hashes and owner digests only where something differs) and SWIM probes one member
//! per period, so from 16 to 128 nodes (8×) the idle bytes/s per node must grow by less than
//! log(128)/log(16) = 1.75× (a digest of every owner each round, as before, grows linearly). A new MAC in the formed
//! cluster reaches every other node within the advert batch window plus a few message latencies, at
//! any size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

mod common;

use std::time::Duration;

use common::{converge, with_macs};
use control::sim::{scale_run, ScaleReport, SimConfig};

fn report(r: &ScaleReport) {
    let p = |v: &[Duration], q| ScaleReport::pct(v, q).unwrap();
    let b = |v: &[f64], q| ScaleReport::pct(v, q).unwrap();
    println!(
        "N = {:4}: formed {:?}; MAC known everywhere during formation p50 {:?} p99 {:?}; new MAC p50 {:?} p99 {:?} max {:?}; \
         idle {:.0} B/s per node (p50, max {:.0}); while MACs appear {:.0} B/s (p50, max {:.0}); deaths {}; \
         {} sync messages, {} pace timers",
        r.nodes,
        r.formed.unwrap(),
        p(&r.formation_known, 50.0),
        p(&r.formation_known, 99.0),
        p(&r.change_known, 50.0),
        p(&r.change_known, 99.0),
        p(&r.change_known, 100.0),
        b(&r.idle_bytes_per_s, 50.0),
        b(&r.idle_bytes_per_s, 100.0),
        b(&r.change_bytes_per_s, 50.0),
        b(&r.change_bytes_per_s, 100.0),
        r.deaths,
        r.sync_messages,
        r.pace_timers
    );
}

#[test]
fn per_node_cost_grows_like_log_n_and_new_macs_spread_in_one_hop() {
    let small = scale_run(16, 16, SimConfig::default());
    report(&small);
    let large = scale_run(128, 16, SimConfig::default());
    report(&large);
    for r in [&small, &large] {
        assert!(r.formed.is_some(), "N = {} formed", r.nodes);
        assert_eq!(r.deaths, 0, "N = {}: no deaths", r.nodes);
        assert_eq!(r.change_known.len(), 16, "every new MAC reached every node");
        // The gossip budget's wake-ups: about one per sync message that had to wait. A superseded
        // Pace timer that re-armed itself made them multiply (491,887 for 311,623 sync messages at
        // N = 128, 6 events per message at 256); now 257,373 at 128.
        assert!(
            r.pace_timers <= r.sync_messages,
            "N = {}: {} pace timers for {} sync messages",
            r.nodes,
            r.pace_timers,
            r.sync_messages
        );
        // Batch window (50 ms) + one message (≤ 5 ms simulated latency) + the 5 ms sampling tick.
        let worst = *r.change_known.last().unwrap();
        assert!(
            worst <= Duration::from_millis(100),
            "N = {}: a new MAC took {worst:?} to reach every node",
            r.nodes
        );
    }
    let cost = |r: &ScaleReport| ScaleReport::pct(&r.idle_bytes_per_s, 50.0).unwrap();
    let ratio = cost(&large) / cost(&small);
    let log_ratio = (128f64).ln() / (16f64).ln();
    println!("idle bytes/s per node, N = 128 ÷ N = 16: {ratio:.2} (log ratio {log_ratio:.2}, linear 8)");
    assert!(
        ratio < log_ratio,
        "per-node idle cost grew {ratio:.2}× from 16 to 128 nodes (log N: {log_ratio:.2}×, N: 8×)"
    );
}

/// Malformed anti-entropy messages from a member (bucket counts out of range, bucket indices beyond
/// the count) are dropped and counted, and change nothing.
#[test]
fn malformed_bucket_messages_are_counted_and_ignored() {
    use control::messages::{encode_sync, OwnerDigest, SyncMessage};
    let mut sim = with_macs(4, SimConfig::default(), 1);
    converge(&mut sim, Duration::from_secs(10), Duration::from_millis(10)).expect("converged");
    let before = sim.nodes[0].node.as_ref().unwrap().stats().malformed;
    let digest = OwnerDigest {
        owner: sim.nodes[2].id,
        generation: 99,
        hash: 1,
        max_seq: 1,
    };
    let bad = [
        SyncMessage::BucketDigest {
            reply: false,
            k: 0,
            which: vec![],
            owners: vec![digest],
        },
        SyncMessage::BucketDigest {
            reply: false,
            k: 1 << 20,
            which: vec![0],
            owners: vec![],
        },
        SyncMessage::BucketDigest {
            reply: true,
            k: 8,
            which: vec![8],
            owners: vec![digest],
        },
        SyncMessage::Summary {
            reply: true,
            root: 0,
            buckets: vec![0; 5000],
            revoked: 0,
            catalog: 0,
            grants: 0,
        },
    ];
    for m in &bad {
        sim.inject(1, 0, encode_sync(m).unwrap());
    }
    sim.run_for(Duration::from_secs(2));
    let after = sim.nodes[0].node.as_ref().unwrap().stats().malformed;
    assert_eq!(after - before, bad.len() as u64);
    assert!(sim.fdb_converged() && sim.digests_equal());
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}
