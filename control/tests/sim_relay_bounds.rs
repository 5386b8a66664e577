//! The bounds of a relayed join (`control/src/node/relay.rs`; simulator, virtual time,
//! deterministic):
//!
//! - the member that answers a join sends the joiner at most `RELAY_DUMP_BYTES` (64 KiB) of tables at
//!   once, beside its gossip budget, however many tables it holds (the simulator marks which sends
//!   left through the budget, so the dump is measured apart from the piece the budget lets out in
//!   the same instant); the joiner still gets every table, the rest through the answerer's budget.
//!
//! Times printed are virtual.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the assertion

mod common;

use std::time::Duration;

use common::stats;
use control::messages::{decode, Packet, SyncMessage};
use control::sim::{Sim, SimConfig};
use control::MacAddr;

// RELAY_DUMP_BYTES: tables sent to a joiner beside the budget, per join, as `dump_size` counts
// them; PIECE_BYTES: a table piece sent through the budget, and the budget's burst.
use control::node::{dump_size, PIECE_BYTES, RELAY_DUMP_BYTES};

/// Node `i`'s MACs: `n` of them.
fn macs(i: usize, n: usize) -> Vec<MacAddr> {
    (0..n)
        .map(|k| MacAddr([0x02, 0, i as u8, (k >> 8) as u8, k as u8, 9]))
        .collect()
}

/// Of a `States` message (`bytes`, a recorded sync message): its entries, what its tables count
/// against the dump's cap (`dump_size`), and its size.
fn states_entries(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    match decode(bytes) {
        Ok(Packet::Sync(SyncMessage::States { owners })) => Some((
            owners.iter().map(|o| o.entries.len()).sum(),
            owners.iter().map(|o| dump_size(&o.entries)).sum(),
            bytes.len(),
        )),
        _ => None,
    }
}

#[test]
fn a_join_answer_sends_at_most_its_dump_at_once_and_the_rest_through_the_budget() {
    // Small tables (60 MACs) in numbers (19 besides the joiner's): the dump ends close to its cap.
    const N: usize = 20;
    const PER_NODE: usize = 60;
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
    let before0 = stats(&sim, 0);
    sim.restart(j);
    let t = sim
        .run_until(Duration::from_secs(30), Duration::from_millis(1), |s| {
            s.membership_converged() && s.fdb_converged()
        })
        .expect("the joiner gets every table through node 0");
    let s0 = stats(&sim, 0);
    assert_eq!(s0.joins_introduced, before0.joins_introduced + 1, "{s0:?}");
    let sent = &sim.nodes[0].sync_sent;
    // The simulator's marks agree with the budget's own counters: every budgeted message, and only
    // those, is marked (nothing went to a revoked node or to ourselves, which `poll_output` drops).
    let budgeted: Vec<usize> = sent.iter().filter(|m| m.3).map(|m| m.2.len()).collect();
    assert_eq!(
        budgeted.len() as u64,
        s0.sync_messages_sent - before0.sync_messages_sent,
        "{s0:?}"
    );
    assert_eq!(
        budgeted.iter().sum::<usize>() as u64,
        s0.sync_bytes_sent - before0.sync_bytes_sent,
        "{s0:?}"
    );
    // The instant node 0 answered the join (its first Introduce).
    let answered = sent
        .iter()
        .find(|(_, _, b, _)| matches!(decode(b), Ok(Packet::Sync(SyncMessage::Introduce { .. }))))
        .map(|(at, _, _, _)| *at)
        .expect("node 0 introduced the joiner");
    // Tables node 0 sent the joiner: beside the budget (the dump, in that instant), and through it.
    let joiner = sim.nodes[j].addr;
    let (mut dump, mut dump_counted, mut dump_bytes, mut dump_msgs) = (0, 0, 0, 0);
    let (mut beside_later, mut through, mut through_bytes, mut through_at_once) = (0, 0, 0, 0);
    for (at, _, b, budgeted) in sent.iter().filter(|(_, to, _, _)| *to == joiner) {
        let Some((entries, counted, len)) = states_entries(b) else {
            continue;
        };
        match (*budgeted, *at == answered) {
            (false, true) => {
                dump += entries;
                dump_counted += counted;
                dump_bytes += len;
                dump_msgs += 1;
            }
            (false, false) => beside_later += entries,
            (true, at_once) => {
                through += entries;
                through_bytes += len;
                if at_once {
                    through_at_once += len;
                }
            }
        }
    }
    let tables = (N - 1) * PER_NODE;
    println!(
        "join answered at {answered:?}: a dump of {dump} entries ({dump_bytes} bytes in {dump_msgs} \
         messages, counted as {dump_counted}) beside the budget; {through} entries ({through_bytes} \
         bytes) through the budget, {through_at_once} bytes of them in that instant; every table at \
         the joiner after {t:?}"
    );
    assert!(dump > 0, "part of the tables went at once");
    // Every table counts the same (PER_NODE entries); the dump sends whole tables.
    assert_eq!(dump % PER_NODE, 0, "{dump} entries");
    let table = dump_counted * PER_NODE / dump;
    assert!(
        table * (N - 1) > RELAY_DUMP_BYTES,
        "node 0 must hold more than a dump ({} bytes counted) for this test to mean anything",
        table * (N - 1)
    );
    // The dump stops before a table that would take it over RELAY_DUMP_BYTES, as `dump_size`
    // counts (each entry at its widest encoding, 24 bytes per owner) ...
    assert!(
        dump_counted <= RELAY_DUMP_BYTES,
        "a dump counted as {dump_counted} bytes"
    );
    // ... and is full: one more table would have crossed it. So any raise of the cap that changes
    // what is sent sends another table and fails the assertion above; small tables keep that
    // raise small (one table less the gap left under the cap).
    assert!(
        dump_counted + table > RELAY_DUMP_BYTES,
        "a dump counted as {dump_counted} bytes, tables of {table}"
    );
    // That count holds the dump's wire size, but for each message's own header (version, kind,
    // variant, owner count: at most 8 bytes).
    assert!(
        dump_bytes <= dump_counted + 8 * dump_msgs,
        "a dump of {dump_bytes} bytes in {dump_msgs} messages, counted as {dump_counted}"
    );
    // Through the budget in that same instant: at most one piece (the bucket's burst is a piece;
    // a piece ends with the entry that reaches PIECE_BYTES).
    assert!(
        through_at_once <= PIECE_BYTES + 1024,
        "{through_at_once} bytes through the budget at once"
    );
    // The rest went through node 0's budget (anti-entropy is at a minute: the relay did it), none
    // of it beside the budget after the answer.
    assert_eq!(beside_later, 0);
    assert!(dump + through >= tables, "{dump} + {through} < {tables}");
    assert!(sim.nodes[j].fdb.contains_key(&macs(0, PER_NODE)[PER_NODE - 1]));
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
}
