//! The bounds of a relayed join (`control/src/node/relay.rs`; simulator, virtual time,
//! deterministic):
//!
//! - the member that answers a join sends the joiner at most `RELAY_DUMP_BYTES` (64 KiB) of tables at
//!   once, beside its gossip budget, however many tables it holds; the joiner still gets every table,
//!   the rest through the answerer's budget.
//!
//! Times printed are virtual.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

mod common;

use std::time::Duration;

use common::stats;
use control::messages::{decode, Packet, SyncMessage};
use control::sim::{Sim, SimConfig};
use control::MacAddr;

// RELAY_DUMP_BYTES: entries sent to a joiner beside the budget, per join; PIECE_BYTES: the gossip
// budget's burst (one piece may leave at once on a full bucket).
use control::node::{PIECE_BYTES, RELAY_DUMP_BYTES};

/// Node `i`'s MACs: `n` of them.
fn macs(i: usize, n: usize) -> Vec<MacAddr> {
    (0..n)
        .map(|k| MacAddr([0x02, 0, i as u8, (k >> 8) as u8, k as u8, 9]))
        .collect()
}

/// Entries of `States` messages in `bytes` (a recorded sync message), and the message's size.
fn states_entries(bytes: &[u8]) -> Option<(usize, usize)> {
    match decode(bytes) {
        Ok(Packet::Sync(SyncMessage::States { owners })) => {
            Some((owners.iter().map(|o| o.entries.len()).sum(), bytes.len()))
        }
        _ => None,
    }
}

#[test]
fn a_join_answer_sends_at_most_its_dump_at_once_and_the_rest_through_the_budget() {
    const N: usize = 10;
    const PER_NODE: usize = 200;
    let j = N - 1;
    let mut sim = Sim::new(
        N,
        SimConfig {
            seed: 21,
            // Every SWIM period and anti-entropy at a minute: nothing but the join, its answer and the
            // relay moves tables to the joiner in the test's time.
            control: common::quiet(),
            record_sync: true,
            ..SimConfig::default()
        },
    );
    for i in 0..N {
        sim.set_macs(i, macs(i, PER_NODE));
    }
    sim.run_until(Duration::from_secs(30), Duration::from_millis(5), |s| {
        s.membership_converged() && s.fdb_converged()
    })
    .expect("formed");
    // Let the formation's put-off meetings (2.5-5 s after each join) and their pieces finish.
    sim.run_for(Duration::from_secs(6));
    // Node j comes back as a new generation without MACs, joining through node 0, and can reach no
    // one else: every table it gets comes from node 0.
    sim.kill(j);
    for k in 1..j {
        sim.cut(j, k);
    }
    sim.nodes[j].macs = Vec::new();
    sim.nodes[0].sync_sent.clear();
    let budget0 = stats(&sim, 0).sync_bytes_sent;
    let introduced0 = stats(&sim, 0).joins_introduced;
    sim.restart(j);
    let t = sim
        .run_until(Duration::from_secs(30), Duration::from_millis(1), |s| {
            s.membership_converged() && s.fdb_converged()
        })
        .expect("the joiner gets every table through node 0");
    let s0 = stats(&sim, 0);
    assert_eq!(s0.joins_introduced, introduced0 + 1, "{s0:?}");
    // What node 0 sent in the instant it answered the join (its first Introduce): the dump beside
    // the budget, plus at most what a full budget lets out at once.
    let sent = &sim.nodes[0].sync_sent;
    let answered = sent
        .iter()
        .find(|(_, _, b)| matches!(decode(b), Ok(Packet::Sync(SyncMessage::Introduce { .. }))))
        .map(|(at, _, _)| *at)
        .expect("node 0 introduced the joiner");
    // Tables node 0 sent the joiner: at once (that instant), and later.
    let joiner = sim.nodes[j].addr;
    let (mut at_once, mut at_once_bytes, mut later, mut later_bytes) = (0, 0, 0, 0);
    for (at, _, b) in sent.iter().filter(|(_, to, _)| *to == joiner) {
        if let Some((entries, len)) = states_entries(b) {
            if *at == answered {
                at_once += entries;
                at_once_bytes += len;
            } else {
                later += entries;
                later_bytes += len;
            }
        }
    }
    let tables = (N - 1) * PER_NODE;
    println!(
        "join answered at {answered:?}: {at_once} entries ({at_once_bytes} bytes) at once, {later} \
         ({later_bytes} bytes) later; every table at the joiner after {t:?}, node 0 sent {} budgeted \
         sync bytes",
        s0.sync_bytes_sent - budget0
    );
    assert!(at_once > 0, "part of the tables went at once");
    let whole = tables * at_once_bytes / at_once;
    assert!(
        whole > RELAY_DUMP_BYTES + PIECE_BYTES + 8192,
        "node 0 must hold more than a dump and a burst ({whole} bytes) for this test to mean anything"
    );
    assert!(
        at_once_bytes <= RELAY_DUMP_BYTES + PIECE_BYTES + 8192,
        "{at_once_bytes} bytes of tables at once"
    );
    // The rest went later, through node 0's budget (anti-entropy is at a minute: the relay did it).
    assert!(at_once + later >= tables, "{at_once} + {later} < {tables}");
    assert!(s0.sync_bytes_sent - budget0 >= later_bytes as u64, "{s0:?}");
    assert!(sim.nodes[j].fdb.contains_key(&macs(0, PER_NODE)[PER_NODE - 1]));
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}
