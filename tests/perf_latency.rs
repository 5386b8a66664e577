//! End-to-end tests for issue 13's latency lever: busy-polling with cross-loop arming (`--busy-poll-us`,
//! `dataplane/src/worker/{busy,arm}.rs`). Functional only (DECISIONS: no timing assertions):
//!
//! - with busy-polling on, ping and TCP pass and the loops' `busy_polls` counter shows they polled without
//!   sleeping after traffic; with it off the busy-poll counters all stay 0;
//! - the *other* loop of the host is armed and catches the next packet of a round trip: a ping from the
//!   busy-polling host's container makes its TX loop arm (and wake) the RX loops, which find the reply
//!   (`busy_poll_armed_hits_rx`); a ping towards it makes its RX loop arm its worker's TX loop, which finds
//!   the container's reply on the TAP (`busy_poll_armed_hits_tx`). At 2 workers too, which checks that the
//!   reply on the TAP comes back on the queue (worker) the request was written to.
//!
//! The busy-polling host uses the largest budget (10 ms), so the other host (not busy-polling, each packet a
//! wake-up) answers within the armed window even on a loaded machine; pings are 200 ms apart, far beyond the
//! loops' own budgets, so every hit counted as armed is one that only the arming made possible.

mod common;

use common::overlay::{ctl_json, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{tcp_transfer, wait_until, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Starts overlayd on `host` (one static peer, `--local`, VNI 1, extra flags) and waits until it answers.
fn start(host: &Host, peer: Ipv4Addr, extra: &[&str]) -> Daemon {
    let (peer, local) = (peer.to_string(), host.underlay_ip().to_string());
    let mut args = vec!["--peer", &peer, "--local", &local, "--vni", "1"];
    args.extend_from_slice(extra);
    let mut d = spawn_overlayd(host, &args);
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists("ovl1") && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    assert!(
        ready && d.is_running(),
        "`{}` not ready within 10 s:\n{}",
        d.cmdline(),
        d.log()
    );
    d
}

fn counter(stats: &Value, key: &str) -> u64 {
    stats
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("`overlayctl stats` has no counter {key}: {stats}"))
}

const BUSY: [&str; 5] = [
    "busy_polls",
    "busy_poll_hits",
    "busy_poll_wakes",
    "busy_poll_armed_hits_tx",
    "busy_poll_armed_hits_rx",
];

fn busy_counters(s: &Value) -> String {
    BUSY.map(|k| format!("{k} {}", counter(s, k))).join(", ")
}

/// Host 1 busy-polls (10 ms) with `workers`, host 2 does not. Pings both ways, then checks that host 1's
/// loops were armed and found the round trips' next packets, and host 2's never spun.
fn armed_loops_catch_the_answer(workers: &str) {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start(
        h1,
        h2.underlay_ip(),
        &["--busy-poll-us", "10000", "--workers", workers],
    );
    let _d2 = start(h2, h1.underlay_ip(), &["--workers", workers]);
    let (c1, c2) = (tb.container(1), tb.container(2));

    // Host 1's TX loop sends each request and arms the RX loops, which catch the reply.
    ping_ok(c1, c2.ip(), 10);
    let s1 = ctl_json(h1, "stats");
    println!(
        "--workers {workers}, after c1 → c2: host 1 {}",
        busy_counters(&s1)
    );
    assert!(
        counter(&s1, "busy_poll_armed_hits_rx") > 0,
        "host 1's RX loops were armed by its TX loop for 10 ms after each request but never found a reply: {s1}"
    );
    assert!(
        counter(&s1, "busy_poll_wakes") > 0,
        "no loop of host 1 was woken by another's arming (pings 200 ms apart leave them asleep): {s1}"
    );

    // Host 1's RX loop arms its worker's TX loop, then writes each request to the TAP; the container's reply
    // is queued on the TAP before that write returns, so the armed TX loop finds it whatever the load: at
    // least half of the 10 replies (a TX loop the arming missed would count none; stray hits from other
    // packets are a few at most).
    let before = counter(&s1, "busy_poll_armed_hits_tx");
    ping_ok(c2, c1.ip(), 10);
    let s1 = ctl_json(h1, "stats");
    println!(
        "--workers {workers}, after c2 → c1: host 1 {}",
        busy_counters(&s1)
    );
    assert!(
        counter(&s1, "busy_poll_armed_hits_tx") >= before + 5,
        "host 1's TX loop was armed by the RX loop that wrote each request to the TAP but found fewer than 5 \
         of the 10 replies (armed hits before: {before}): {s1}"
    );

    let s2 = ctl_json(h2, "stats");
    for k in BUSY {
        assert_eq!(
            counter(&s2, k),
            0,
            "host 2 runs without --busy-poll-us: {k} must stay 0: {s2}"
        );
    }
}

#[test]
fn armed_loops_catch_the_answer_one_worker() {
    armed_loops_catch_the_answer("1");
}

#[test]
fn armed_loops_catch_the_answer_two_workers() {
    armed_loops_catch_the_answer("2");
}

#[test]
fn busy_poll_passes_traffic_and_polls() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    // Host 1 busy-polls, host 2 keeps the helpers' default (off): both directions cross one of each.
    let _d1 = start(h1, h2.underlay_ip(), &["--busy-poll-us", "200"]);
    let _d2 = start(h2, h1.underlay_ip(), &[]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 5);
    tcp_transfer(c1, c2, 6201, 4, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    tcp_transfer(c2, c1, 6202, 4, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    ping_ok(c2, c1.ip(), 5);

    let (s1, s2) = (ctl_json(h1, "stats"), ctl_json(h2, "stats"));
    println!(
        "host 1 (busy-poll 200 µs): {}; host 2 (off): {}",
        busy_counters(&s1),
        busy_counters(&s2)
    );
    assert!(
        counter(&s1, "busy_polls") > 0,
        "host 1 carried traffic with --busy-poll-us 200 but never busy-polled: {s1}"
    );
    for k in BUSY {
        assert_eq!(
            counter(&s2, k),
            0,
            "host 2 runs with --busy-poll-us 0 and must never spin: {k}: {s2}"
        );
    }
    for s in [&s1, &s2] {
        assert!(counter(s, "rx_frames") > 0, "{s}");
    }
}
