//! End-to-end proof of issue 9 §6–§8 resilience: underlay loss, partition and heal, a saturated data path,
//! garbage during a transfer, and least privilege, with real overlayd processes in network namespaces.
//!
//! Owns: the loss/partition/overload/garbage/capability scenarios and the figures docs/RELIABILITY.md quotes
//! (each test prints them; run with `--nocapture`). Long variants (60 s of loss, 10^6 garbage datagrams) run
//! with `OVERLAYD_LONG_TESTS=1`; the short ones run in CI.
//! Must never: assert on a latency or a convergence time other than a generous functional deadline (the
//! targets are printed, not asserted), touch loopback or the root namespace with nftables (rules live in a
//! host namespace and match its `eth0` only), or send traffic outside the testbed.
//!
//! One test binary; the scenarios live in `tests/resilience/`: loss (`loss.rs`), partition and heal
//! (`partition.rs`), a saturated data path (`overload.rs`), garbage during a transfer (`underlay_garbage.rs`)
//! and least privilege (`privileges.rs`). The helpers they share are here, and so is `garbage_sender`, which
//! `common::garbage` re-executes by its exact name at the root of the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "resilience/loss.rs"]
mod loss;
#[path = "resilience/overload.rs"]
mod overload;
#[path = "resilience/partition.rs"]
mod partition;
#[path = "resilience/privileges.rs"]
mod privileges;
#[path = "resilience/underlay_garbage.rs"]
mod underlay_garbage;

use common::garbage;
use common::overlay::{ctl_json, form_cluster, ping_ok, rows, start_overlayd, str_field};
use common::testbed::{Daemon, Host, Netns, Testbed};
use serde_json::Value;

fn long() -> bool {
    std::env::var("OVERLAYD_LONG_TESTS").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// `(addr, state, generation)` of every `peers` row on `host`.
fn members(host: &Host) -> Vec<(String, String, u64)> {
    rows(&ctl_json(host, "peers"))
        .iter()
        .map(|r| {
            (
                str_field(r, "addr").to_string(),
                str_field(r, "state").to_string(),
                r.get("generation").and_then(Value::as_u64).unwrap_or(0),
            )
        })
        .collect()
}

fn all_alive(hosts: &[&Host]) -> bool {
    hosts.iter().all(|h| {
        let m = members(h);
        m.len() == hosts.len() && m.iter().all(|(_, s, _)| s == "alive")
    })
}

/// Loads an nftables table `name` with `rules` (chain bodies) into `host`'s namespace only.
fn nft_table(host: &Host, name: &str, input: &str, output: &str) {
    let path = host
        .log_dir()
        .join(format!("{}-{name}.nft", host.ns()))
        .to_string_lossy()
        .into_owned();
    let script = format!(
        "table inet {name} {{\n\
         chain input {{\n type filter hook input priority 0; policy accept;\n {input}\n }}\n\
         chain output {{\n type filter hook output priority 0; policy accept;\n {output}\n }}\n}}\n"
    );
    std::fs::write(&path, script).unwrap();
    if let Err(e) = host.exec("nft", &["-f", &path]) {
        panic!("nftables in {} (apt-get install nftables): {e}", host.ns());
    }
}

fn nft_delete(host: &Host, name: &str) {
    host.run("nft", &["delete", "table", "inet", name]);
}

/// Any row that is not `alive`, a missing member, or a changed generation (a death followed by a rejoin
/// between two polls), compared with `baseline`.
fn membership_faults(host: &Host, baseline: &[(String, String, u64)], n: usize) -> Vec<String> {
    let now = members(host);
    let mut faults = Vec::new();
    if now.len() != n {
        faults.push(format!(
            "host {} lists {} members, not {n}: {now:?}",
            host.index(),
            now.len()
        ));
    }
    for (addr, state, gen) in &now {
        if state != "alive" && state != "suspect" {
            faults.push(format!("host {} sees {addr} {state}", host.index()));
        }
        if let Some((_, _, g0)) = baseline.iter().find(|(a, _, _)| a == addr) {
            if g0 != gen {
                faults.push(format!(
                    "host {} sees {addr} generation {g0} → {gen}",
                    host.index()
                ));
            }
        }
    }
    faults
}

/// The lines of `d`'s log after byte `from` (see [`log_len`]) in which the node says it was declared down
/// and rejoined: a false death, even one too short for any `peers` poll to see (the rejoined node keeps its
/// generation; only its identity's renewal changes, which `peers --json` does not show).
fn rejoins_since(d: &Daemon, from: usize) -> usize {
    let log = d.log();
    log.get(from..)
        .unwrap_or("")
        .matches("declared down by the cluster")
        .count()
}

fn log_len(d: &Daemon) -> usize {
    d.log().len()
}

/// `(host, times it was declared down and rejoined)` since `marks` (one [`log_len`] per daemon), for the
/// hosts (numbered from 1) that were.
fn rejoined(daemons: &[Daemon], marks: &[usize]) -> Vec<(usize, usize)> {
    daemons
        .iter()
        .zip(marks)
        .enumerate()
        .map(|(i, (d, &m))| (i + 1, rejoins_since(d, m)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// A cluster on `hosts` (see [`form_cluster`]) whose containers have all pinged each other once.
fn cluster_pinging_all(tb: &Testbed, hosts: &[&Host]) -> Vec<Daemon> {
    let daemons = form_cluster(tb, hosts, "res", &|_| Vec::new());
    for a in hosts {
        for b in hosts {
            if a.index() != b.index() {
                ping_ok(a.container(), b.container().ip(), 1);
            }
        }
    }
    daemons
}

/// Static mode on `h1` and `h2`, each naming the other as its peer (`h1` started first).
fn start_static_pair(h1: &Host, h2: &Host) -> (Daemon, Daemon) {
    let start = |h: &Host, peer: &Host| {
        start_overlayd(
            h,
            &[
                "--peer",
                &peer.underlay_ip().to_string(),
                "--local",
                &h.underlay_ip().to_string(),
            ],
        )
    };
    let d1 = start(h1, h2);
    let d2 = start(h2, h1);
    (d1, d2)
}

/// The scenarios of this binary run one at a time: each one's conditions are the ones it names (20% loss is
/// not also an `iperf3` saturating the same two cores from the test next door; that is its own scenario).
static SCENARIO: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SCENARIO.lock().unwrap_or_else(|e| e.into_inner())
}

/// Helper, not a test: sends the garbage when re-executed inside a host namespace.
#[test]
fn garbage_sender() {
    garbage::sender_main();
}
