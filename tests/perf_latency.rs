//! End-to-end tests for issue 13's latency lever: busy-polling (`--busy-poll-us`) by `SCHED_IDLE` keeper
//! threads and/or by the loops with cross-loop arming (`dataplane/src/worker/{keeper,busy,arm}.rs`; who spins
//! is chosen by `--busy-poll-spin`). Functional only (DECISIONS: no timing assertions):
//!
//! - by default the keepers spin: one per CPU, at most one per loop, under `SCHED_IDLE`; they spin after
//!   traffic (`busy_poll_keeper_spells`) and all sleep again once it stopped (every spell ended,
//!   `busy_poll_keeper_rests`, and every keeper thread in state S); the loops do not spin; SIGTERM still
//!   exits 0;
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
    start_spin(host, peer, extra, None)
}

/// [`start`] with `--busy-poll-spin spin` (who spins: `loops`, `keepers`, `both`; `dataplane::worker::Spin`).
fn start_spin(host: &Host, peer: Ipv4Addr, extra: &[&str], spin: Option<&str>) -> Daemon {
    let (peer, local) = (peer.to_string(), host.underlay_ip().to_string());
    let mut args = vec!["--peer", &peer, "--local", &local, "--vni", "1"];
    args.extend_from_slice(extra);
    if let Some(spin) = spin {
        args.extend_from_slice(&["--busy-poll-spin", spin]);
    }
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

const BUSY: [&str; 8] = [
    "busy_polls",
    "busy_poll_hits",
    "busy_poll_wakes",
    "busy_poll_armed_hits_tx",
    "busy_poll_armed_hits_rx",
    "busy_poll_keeper_spells",
    "busy_poll_keeper_rests",
    "busy_poll_keeper_us",
];

fn busy_counters(s: &Value) -> String {
    BUSY.map(|k| format!("{k} {}", counter(s, k))).join(", ")
}

/// Host 1 busy-polls (10 ms) with `workers`, host 2 does not. Pings both ways, then checks that host 1's
/// loops were armed and found the round trips' next packets, and host 2's never spun.
fn armed_loops_catch_the_answer(workers: &str) {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    // The loops spin (and are armed) only with `loops` or `both`; the default is the keepers alone.
    let _d1 = start_spin(
        h1,
        h2.underlay_ip(),
        &["--busy-poll-us", "10000", "--workers", workers],
        Some("both"),
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
    // Host 1 busy-polls (loops and keepers), host 2 keeps the helpers' default (off): both directions cross
    // one of each.
    let _d1 = start_spin(h1, h2.underlay_ip(), &["--busy-poll-us", "200"], Some("both"));
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
    let s1 = keepers_spun(h1, c1, c2.ip());
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

/// overlayd's threads named `prefix…`: (name, state letter, scheduling policy) from `/proc/PID/task/*/stat`.
fn threads(pid: u32, prefix: &str) -> Vec<(String, String, u32)> {
    let dir = format!("/proc/{pid}/task");
    let mut v = Vec::new();
    for t in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
    {
        let path = t.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with(prefix) {
            continue;
        }
        // Fields after the ")" closing the name: field 3 (state) first, field 41 (policy) 38 later.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |r| r.1)
            .split_whitespace()
            .collect();
        let policy = rest.get(38).and_then(|p| p.parse().ok()).unwrap_or(u32::MAX);
        v.push((comm.to_string(), rest.first().unwrap_or(&"?").to_string(), policy));
    }
    v.sort();
    v
}

/// Host `h`'s stats once its keepers have spun, pinging `to` from `c` until they have. A `SCHED_IDLE`
/// keeper only runs when a CPU has nothing else to run, so on a machine kept busy by other work (parallel
/// tests) its first spell may wait: a functional deadline of 30 s, not a timing.
fn keepers_spun(h: &Host, c: &impl Netns, to: Ipv4Addr) -> Value {
    let mut last = Value::Null;
    let spun = wait_until(Duration::from_secs(30), || {
        let _ = c.ping(to, 1);
        last = ctl_json(h, "stats");
        counter(&last, "busy_poll_keeper_spells") > 0
    });
    assert!(
        spun,
        "host's keepers never spun within 30 s of pings forwarded by its loops: {last}"
    );
    last
}

/// `SCHED_IDLE` in `/proc/PID/task/TID/stat`.
const SCHED_IDLE: u32 = 5;

/// The default busy-poll (keepers): host 1 runs one `SCHED_IDLE` keeper per CPU (at most one per loop),
/// which spin around traffic and all go back to sleep once it stops; host 2 (off) runs none.
fn keepers_spin_around_traffic(workers: usize) {
    let (loops, workers) = (2 * workers, workers.to_string());
    let workers = workers.as_str();
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let d1 = start(
        h1,
        h2.underlay_ip(),
        &["--busy-poll-us", "10000", "--workers", workers],
    );
    let d2 = start(h2, h1.underlay_ip(), &["--workers", workers]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    // A keeper names itself and takes SCHED_IDLE once its thread first runs: wait for that.
    let mut keepers = Vec::new();
    wait_until(Duration::from_secs(10), || {
        keepers = threads(d1.pid(), "ovl-keep");
        keepers.len() == cpus.min(loops) && keepers.iter().all(|k| k.2 == SCHED_IDLE)
    });
    assert_eq!(
        keepers.len(),
        cpus.min(loops),
        "one keeper per CPU ({cpus}), at most one per loop ({loops}): {keepers:?}"
    );
    assert!(
        keepers.iter().all(|k| k.2 == SCHED_IDLE),
        "keepers must run under SCHED_IDLE (policy {SCHED_IDLE}): {keepers:?}"
    );
    assert_eq!(
        threads(d2.pid(), "ovl-keep"),
        [],
        "host 2 has --busy-poll-us 0: no keeper"
    );

    ping_ok(c1, c2.ip(), 5);
    ping_ok(c2, c1.ip(), 5);
    let s1 = keepers_spun(h1, c1, c2.ip());
    println!("--workers {workers}, after pings: host 1 {}", busy_counters(&s1));
    // The loops themselves do not spin by default.
    assert_eq!(counter(&s1, "busy_polls"), 0, "{s1}");

    // Traffic stopped: within 10 s every spell has ended and every keeper sleeps (10 ms budget; a stray
    // probe may start a new spell meanwhile, so wait for a moment where all rest).
    let mut last = Value::Null;
    let rested = wait_until(Duration::from_secs(30), || {
        last = ctl_json(h1, "stats");
        let spells = counter(&last, "busy_poll_keeper_spells");
        spells == counter(&last, "busy_poll_keeper_rests")
            && threads(d1.pid(), "ovl-keep").iter().all(|k| k.1 == "S")
    });
    assert!(
        rested,
        "host 1's keepers did not all rest after traffic stopped: {} {:?}",
        busy_counters(&last),
        threads(d1.pid(), "ovl-keep")
    );
    assert!(counter(&last, "busy_poll_keeper_us") > 0, "{last}");
    let s2 = ctl_json(h2, "stats");
    for k in BUSY {
        assert_eq!(
            counter(&s2, k),
            0,
            "host 2 runs without --busy-poll-us: {k} must stay 0: {s2}"
        );
    }

    // The keepers do not hold up a clean exit.
    let mut d1 = d1;
    d1.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    let st = d1.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "no clean exit on SIGTERM:\n{}",
        d1.log()
    );
}

#[test]
fn keepers_spin_around_traffic_one_worker() {
    keepers_spin_around_traffic(1);
}

#[test]
fn keepers_spin_around_traffic_two_workers() {
    keepers_spin_around_traffic(2);
}

/// `--worker-loops combined` (dataplane `worker/combined.rs`): host 1 runs one `ovl-wk<i>` thread per worker
/// for both directions and no `ovl-tx`/`ovl-rx` thread; host 2 keeps the split loops. Pings and TCP both ways
/// pass through it (a ping towards host 1 is answered by the container during the combined worker's TAP write
/// and read back by the same thread), and both directions are counted on host 1.
#[test]
fn combined_workers_forward_both_directions() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(
        h1,
        h2.underlay_ip(),
        &["--worker-loops", "combined", "--workers", "2"],
    );
    let d2 = start(h2, h1.underlay_ip(), &["--workers", "2"]);
    let names = |d: &Daemon, p: &str| {
        let mut v: Vec<String> = threads(d.pid(), p).into_iter().map(|t| t.0).collect();
        v.sort();
        v
    };
    assert_eq!(names(&d1, "ovl-wk"), ["ovl-wk0", "ovl-wk1"], "{}", d1.log());
    assert!(
        names(&d1, "ovl-tx").is_empty() && names(&d1, "ovl-rx").is_empty(),
        "a combined host runs no split loops: {:?} {:?}",
        names(&d1, "ovl-tx"),
        names(&d1, "ovl-rx")
    );
    assert_eq!(names(&d2, "ovl-tx"), ["ovl-tx0", "ovl-tx1"]);
    assert!(names(&d2, "ovl-wk").is_empty());

    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 5);
    ping_ok(c2, c1.ip(), 5);
    tcp_transfer(c1, c2, 6211, 4, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    tcp_transfer(c2, c1, 6212, 4, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let s1 = ctl_json(h1, "stats");
    for k in ["rx_frames", "tx_frames", "rx_datagrams", "tx_datagrams"] {
        assert!(counter(&s1, k) > 0, "host 1 (combined) counted no {k}: {s1}");
    }
    // A deleted TAP: the combined workers set it aside and take the recreated one (behind the same fds).
    h1.run("ip", &["link", "del", "ovl1"]);
    assert!(
        wait_until(Duration::from_secs(10), || c1.ping(c2.ip(), 1).is_ok()),
        "no ping through host 1's recreated TAP within 10 s:\n{}",
        d1.log()
    );
    ping_ok(c2, c1.ip(), 3);
    assert!(d1.is_running(), "{}", d1.log());
}
