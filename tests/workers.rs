//! End-to-end tests of `--workers N` (issue 13 §2): two overlayd hosts at 1, 2 and 4 workers pass ping and
//! concurrent TCP transfers; every network's TAP has one queue per worker; at 4 workers more than one
//! worker's receive socket and more than one TAP queue carried traffic (per-worker counters of
//! `overlayctl stats --json`, whose sums are the totals); a TAP deleted under 2 workers comes back with its
//! queues and forwards again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_json, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{tcp_transfer, wait_until, Daemon, Host, Netns, Testbed, BRIDGE};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// The runs take turns: each saturates the machine's CPUs with 12 transfers, and a ping of one run must not
/// wait behind another run's traffic (this machine class has 2 vCPUs).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The TAP of the default network.
const TAP: &str = "ovl1";
/// Concurrent TCP connections per run. The sender hashes each inner flow onto one of 64 outer source ports
/// and the receiver's kernel hashes each outer 4-tuple onto one of its `N` sockets, so with 4 workers the
/// chance that every flow lands on one socket is about 4·(1/4)^(distinct ports − 1): below 1e-6 here.
const FLOWS: u16 = 12;

/// Starts overlayd on `host` with `--workers workers` (static peer `peer`) and waits until its TAP exists
/// and it answers.
fn start(host: &Host, peer: &Host, workers: usize) -> Daemon {
    let (p, l, w) = (
        peer.underlay_ip().to_string(),
        host.underlay_ip().to_string(),
        workers.to_string(),
    );
    let mut d = spawn_overlayd(host, &["--peer", &p, "--local", &l, "--workers", &w]);
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists(TAP) && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 10 s:\n{}", d.cmdline(), d.log());
    d
}

/// The TX queues the kernel shows for `dev` (`/sys/class/net/<dev>/queues/tx-*`, the namespace's sysfs): a
/// multiqueue TAP has one per attached queue fd.
fn tap_queues(host: &Host, dev: &str) -> usize {
    let out = host.run("ls", &[&format!("/sys/class/net/{dev}/queues")]);
    out.split_whitespace().filter(|q| q.starts_with("tx-")).count()
}

/// `workers[].key` of `overlayctl stats --json`.
fn per_worker(stats: &Value, key: &str) -> Vec<u64> {
    stats["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers array in stats: {stats}"))
        .iter()
        .map(|w| {
            w[key]
                .as_u64()
                .unwrap_or_else(|| panic!("workers[].{key} missing: {stats}"))
        })
        .collect()
}

/// `FLOWS` TCP connections at once between containers 1 and 2, half each way, each checking its bytes.
fn transfers(tb: &Testbed, base: u16) {
    let (k1, k2) = (tb.container(1), tb.container(2));
    std::thread::scope(|s| {
        let flows: Vec<_> = (0..FLOWS)
            .map(|k| {
                s.spawn(move || {
                    let (from, to) = if k % 2 == 0 { (k1, k2) } else { (k2, k1) };
                    tcp_transfer(from, to, base + k, 2, Duration::from_secs(60))
                })
            })
            .collect();
        for (k, f) in flows.into_iter().enumerate() {
            f.join()
                .expect("transfer thread")
                .unwrap_or_else(|e| panic!("flow {k}: {e}"));
        }
    });
}

/// One run at `workers`: both hosts up, ping both ways, concurrent TCP transfers, then `also`; returns both
/// hosts' stats after the traffic.
fn run(workers: usize, also: impl FnOnce(&Testbed, &Daemon)) -> (Value, Value) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(h1, h2, workers);
    let mut d2 = start(h2, h1, workers);
    for h in [h1, h2] {
        assert_eq!(
            tap_queues(h, TAP),
            workers,
            "{TAP} on {} has one queue per worker",
            h.ns()
        );
    }
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);
    transfers(&tb, 7000);
    also(&tb, &d1);
    let (s1, s2) = (ctl_json(h1, "stats"), ctl_json(h2, "stats"));
    for (h, s, d) in [(h1, &s1, &mut d1), (h2, &s2, &mut d2)] {
        assert!(
            d.try_wait().is_none(),
            "overlayd on {} died:\n{}",
            h.ns(),
            d.log()
        );
        for key in ["rx_frames", "tx_frames", "rx_datagrams", "tx_datagrams"] {
            let per = per_worker(s, key);
            assert_eq!(per.len(), workers, "one row per worker: {s}");
            // Counted after the traffic: the totals are the workers' sums (nothing else counts these).
            assert_eq!(per.iter().sum::<u64>(), s[key].as_u64().unwrap(), "{key}: {s}");
        }
        println!(
            "--workers {workers}, {}: rx_datagrams per worker {:?}, frames read from TAP queues {:?}, frames written to TAP queues {:?}",
            h.ns(),
            per_worker(s, "rx_datagrams"),
            per_worker(s, "rx_frames"),
            per_worker(s, "tx_frames"),
        );
    }
    (s1, s2)
}

#[test]
fn one_worker_forwards() {
    run(1, |_, _| {});
}

/// Two workers; then the TAP is deleted under the daemon: it comes back with both queues, on the bridge,
/// and forwards again (the workers' fds are re-pointed at the new device).
#[test]
fn two_workers_forward_and_survive_a_deleted_tap() {
    run(2, |tb, d1| {
        let h1 = tb.host(1);
        h1.run("ip", &["link", "del", TAP]);
        let back = wait_until(Duration::from_secs(5), || {
            h1.exec("ip", &["-o", "link", "show", "dev", TAP])
                .is_ok_and(|l| l.contains(&format!("master {BRIDGE}")) && l.contains(",UP"))
        });
        assert!(back, "{TAP} not back on {BRIDGE} within 5 s:\n{}", d1.log());
        assert_eq!(tap_queues(h1, TAP), 2, "the recreated TAP has both queues again");
        let (c1, c2) = (tb.container(1), tb.container(2));
        assert!(
            wait_until(Duration::from_secs(5), || c1.ping(c2.ip(), 1).is_ok()),
            "no ping through the recreated TAP within 5 s:\n{}",
            d1.log()
        );
        transfers(tb, 7100);
    });
}

/// Four workers: flows spread, so more than one worker's socket received datagrams and more than one TAP
/// queue was read from and written to, on each host.
#[test]
fn four_workers_spread_flows_over_sockets_and_queues() {
    let (s1, s2) = run(4, |_, _| {});
    for (name, s) in [("host 1", &s1), ("host 2", &s2)] {
        for (key, what) in [
            ("rx_datagrams", "receive sockets"),
            ("rx_frames", "TAP queues read"),
            ("tx_frames", "TAP queues written"),
        ] {
            let per = per_worker(s, key);
            let busy = per.iter().filter(|&&n| n > 0).count();
            assert!(
                busy > 1,
                "{name}: only {busy} of 4 {what} carried traffic ({key} per worker {per:?})"
            );
        }
    }
}
