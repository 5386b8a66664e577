//! End-to-end test for issue 13's latency lever: adaptive busy-polling (`--busy-poll-us`). Functional only
//! (DECISIONS: no timing assertions): with busy-polling on, ping and TCP pass and the loops' `busy_polls`
//! counter shows they polled without sleeping after traffic; with it off (the test helpers' default) the
//! counter stays 0.

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
        "host 1 (busy-poll 200 µs): busy_polls {} hits {}; host 2 (off): busy_polls {}",
        counter(&s1, "busy_polls"),
        counter(&s1, "busy_poll_hits"),
        counter(&s2, "busy_polls")
    );
    assert!(
        counter(&s1, "busy_polls") > 0,
        "host 1 carried traffic with --busy-poll-us 200 but never busy-polled: {s1}"
    );
    assert_eq!(
        (counter(&s2, "busy_polls"), counter(&s2, "busy_poll_hits")),
        (0, 0),
        "host 2 runs with --busy-poll-us 0 and must never spin"
    );
    for s in [&s1, &s2] {
        assert!(counter(s, "rx_frames") > 0, "{s}");
    }
}
