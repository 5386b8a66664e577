//! End-to-end tests: real overlayd processes in network namespaces, real traffic between containers.
//!
//! Each test builds its own testbed (unique namespace names, so tests run in parallel) and everything is
//! deleted on drop, also when an assertion fails. Traffic only goes to addresses inside those namespaces.
//! Timeouts are functional ("within 10 s"), never performance assertions.

mod common;

use common::overlay::{ctl_json, ping_ok, spawn_overlayd, OVERLAYCTL};

use common::garbage::{self, kernel_udp_drops, Stats, GARBAGE_COUNT};
use common::testbed::{tcp_transfer, wait_until, BridgeMode, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// Starts overlayd on `host` with every other host of `peers` as `--peer` and `--local <own underlay ip>`,
/// then waits (10 s) until its TAP exists and `overlayctl stats` answers.
fn start_overlayd(host: &Host, peers: &[Ipv4Addr], vni: Option<u32>, extra: &[&str]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.push("--peer".into());
        args.push(p.to_string());
    }
    args.push("--local".into());
    args.push(host.underlay_ip().to_string());
    // Every daemon its own state dir (one daemon per state dir: see src/lock.rs).
    args.push("--state-dir".into());
    args.push(
        host.log_dir()
            .join(format!("state-{}", host.ns()))
            .display()
            .to_string(),
    );
    if let Some(v) = vni {
        args.push("--vni".into());
        args.push(v.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = spawn_overlayd(host, &args);
    let tap = format!("ovl{}", vni.unwrap_or(1));
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists(&tap) && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(
        ready,
        "`{}` not ready within 10 s (TAP {tap} present: {}, overlayctl: {:?}):\n{}",
        d.cmdline(),
        host.link_exists(&tap),
        host.exec(OVERLAYCTL, &["stats", "--json"])
            .err()
            .map(|e| e.to_string()),
        d.log()
    );
    d
}

fn fdb_entry<'a>(fdb: &'a Value, mac: &str) -> Option<&'a Value> {
    fdb.as_array()?.iter().find(|e| {
        e.get("mac")
            .and_then(Value::as_str)
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    })
}

// ---------------------------------------------------------------------------------------------------------
// a. three hosts
// ---------------------------------------------------------------------------------------------------------

#[test]
fn three_hosts_ping_tcp_fdb_stats() {
    let tb = Testbed::builder().hosts(3).build();
    let ips: Vec<Ipv4Addr> = tb.hosts().iter().map(Host::underlay_ip).collect();
    let _daemons: Vec<Daemon> = tb
        .hosts()
        .iter()
        .map(|h| {
            let peers: Vec<Ipv4Addr> = ips.iter().copied().filter(|ip| *ip != h.underlay_ip()).collect();
            start_overlayd(h, &peers, None, &[])
        })
        .collect();

    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                ping_ok(tb.container(a), tb.container(b).ip(), 3);
            }
        }
    }
    // Default MTU: underlay 1500 - 50 (RFC 7348 overhead over IPv4), and full-size frames pass unfragmented.
    for h in tb.hosts() {
        let link = h.run("ip", &["-o", "link", "show", "ovl1"]);
        assert!(
            link.contains(" mtu 1450 "),
            "host {}: TAP ovl1 should have MTU 1450: {link}",
            h.index()
        );
    }
    let c2 = tb.container(2).ip().to_string();
    // 1422 bytes of ICMP payload + 8 ICMP + 20 IP = 1450, with DF set.
    tb.container(1)
        .exec(
            "ping",
            &["-n", "-q", "-c", "2", "-W", "2", "-M", "do", "-s", "1422", &c2],
        )
        .unwrap_or_else(|e| panic!("a full-size 1450-byte packet with DF did not cross the overlay: {e}"));

    let mut port = 5000;
    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                port += 1;
                tcp_transfer(tb.container(a), tb.container(b), port, 2, Duration::from_secs(60))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    let fdb = ctl_json(tb.host(1), "fdb");
    for n in [2, 3] {
        let c = tb.container(n);
        let e = fdb_entry(&fdb, c.mac()).unwrap_or_else(|| {
            panic!(
                "host 1's FDB has no entry for container {n} ({}):\n{fdb}",
                c.mac()
            )
        });
        assert_eq!(
            e.get("origin").and_then(Value::as_str),
            Some("learned"),
            "origin of {}: {e}",
            c.mac()
        );
        let want = tb.host(n).underlay_ip().to_string();
        assert_eq!(
            e.get("vtep").and_then(Value::as_str),
            Some(want.as_str()),
            "vtep of {}: {e}",
            c.mac()
        );
        assert_eq!(
            e.get("vni").and_then(Value::as_u64),
            Some(1),
            "vni of {}: {e}",
            c.mac()
        );
    }
    // Container 1 lives behind host 1's own bridge: it must not be learned behind a remote VTEP.
    if let Some(e) = fdb_entry(&fdb, tb.container(1).mac()) {
        assert_ne!(
            e.get("origin").and_then(Value::as_str),
            Some("learned"),
            "local MAC learned remotely: {e}"
        );
    }

    let stats: Vec<Stats> = tb.hosts().iter().map(Stats::get).collect();
    for (i, s) in stats.iter().enumerate() {
        let h = i + 1;
        assert!(
            s.rx_frames > 0 && s.tx_frames > 0 && s.rx_datagrams > 0 && s.tx_datagrams > 0,
            "host {h}: all four traffic counters must be non-zero after pings and TCP: {s:?}"
        );
        // Every frame written to the TAP came from a received datagram.
        assert!(
            s.tx_frames <= s.rx_datagrams,
            "host {h}: more frames to the TAP than datagrams in: {s:?}"
        );
        // Every datagram received was either written to the TAP or dropped for a reason.
        assert!(
            s.rx_datagrams <= s.tx_frames + s.drops_total(),
            "host {h}: received datagrams neither delivered nor counted as drops: {s:?}"
        );
        // Every frame read from the TAP was sent at least once (flooding sends more) or dropped.
        assert!(
            s.rx_frames <= s.tx_datagrams + s.drops_total(),
            "host {h}: frames from the TAP neither sent nor counted as drops: {s:?}"
        );
    }
    // Only the three daemons send VXLAN on this underlay: nobody can receive more than was sent.
    let sent: u64 = stats.iter().map(|s| s.tx_datagrams).sum();
    let received: u64 = stats.iter().map(|s| s.rx_datagrams).sum();
    assert!(
        received <= sent,
        "Σ rx_datagrams {received} > Σ tx_datagrams {sent}: {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// b. interop with kernel VXLAN
// ---------------------------------------------------------------------------------------------------------

#[test]
fn interop_with_kernel_vxlan() {
    // overlayd creates ovl0 itself on host 1 (its default); host 2 gets a testbed bridge + kernel VXLAN.
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d = start_overlayd(h1, &[h2.underlay_ip()], Some(42), &[]);
    h1.attach_container(Duration::from_secs(10));
    h2.add_bridge();
    h2.add_kernel_vxlan(42, 4789, &[h1.underlay_ip()]);
    // Complete inner checksums and wire-sized datagrams, as behind a physical NIC. The default veth offloads
    // (partial checksums, tunnel GSO packets) are tested in tests/perf_entropy.rs.
    h2.kernel_tx_csum_off();
    let (c1, c2) = (tb.container(1), tb.container(2));

    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);
    tcp_transfer(c1, c2, 5001, 4, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("overlayd → kernel: {e}"));
    tcp_transfer(c2, c1, 5002, 4, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("kernel → overlayd: {e}"));

    // Each side learned the other's container behind the other's VTEP.
    let fdb = ctl_json(h1, "fdb");
    let e =
        fdb_entry(&fdb, c2.mac()).unwrap_or_else(|| panic!("overlayd did not learn {}:\n{fdb}", c2.mac()));
    assert_eq!(e.get("vtep").and_then(Value::as_str), Some("10.0.0.2"), "{e}");
    assert_eq!(e.get("vni").and_then(Value::as_u64), Some(42), "{e}");
    let kfdb = h2.run("bridge", &["fdb", "show", "dev", "vx42"]);
    let want = format!("{} dst {}", c1.mac(), h1.underlay_ip());
    assert!(
        kfdb.lines().any(|l| l.starts_with(&want)),
        "kernel VXLAN did not learn `{want}`:\n{kfdb}"
    );
}

/// Offload fallback: one side without any offload (plain TAP, one frame per datagram, no GSO/GRO), the other
/// with TSO + UDP GSO + GRO coalescing; ping, TCP integrity both ways and segment accounting.
#[test]
fn offload_and_plain_peers_interoperate() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_overlayd(h1, &[h2.underlay_ip()], None, &["--no-offload"]);
    let _d2 = start_overlayd(h2, &[h1.underlay_ip()], None, &[]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);
    tcp_transfer(c1, c2, 5001, 8, Duration::from_secs(60)).unwrap_or_else(|e| panic!("plain → offload: {e}"));
    tcp_transfer(c2, c1, 5002, 8, Duration::from_secs(60)).unwrap_or_else(|e| panic!("offload → plain: {e}"));
    let (s1, s2) = (Stats::get(h1), Stats::get(h2));
    // The plain side never sees a superframe: every frame from its TAP is one datagram on the wire.
    assert_eq!(
        s1.rx_frames, s1.tx_datagrams,
        "plain side: frames from TAP vs datagrams sent: {s1:?}"
    );
    // The offload side sent ≥ 8 MiB in segments no larger than the overlay MTU, so at least that many datagrams.
    assert!(
        s2.tx_datagrams >= 8 * 1024 * 1024 / 1450,
        "offload side sent too few datagrams: {s2:?}"
    );
    assert_eq!(s1.traffic_drops(), 0, "{s1:?}");
    assert_eq!(s2.traffic_drops(), 0, "{s2:?}");
}

// ---------------------------------------------------------------------------------------------------------
// c. garbage on the VXLAN port
// ---------------------------------------------------------------------------------------------------------

/// Non-garbage frames allowed through during the garbage burst (container 1's rx_packets, overlayd's
/// tx_frames, and datagrams beyond the garbage). The testbed disables IPv6 and the test sends nothing, so the
/// only traffic is the ARP neighbour re-probe container 2 may send a few seconds after the warm-up ping
/// (observed: 1 frame). A leak of garbage would show as hundreds or thousands.
const NOISE_TOLERANCE: u64 = 3;

#[test]
fn garbage_datagrams_are_counted_and_dropped() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_overlayd(h1, &[h2.underlay_ip()], None, &[]);
    let _d2 = start_overlayd(h2, &[h1.underlay_ip()], None, &[]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);
    std::thread::sleep(Duration::from_millis(500)); // let the last replies drain before the baseline

    let before = Stats::get(h1);
    let kernel_before = kernel_udp_drops(h1);
    let c1_before = c1.link_stat("eth0", "rx_packets");

    garbage::send_from(h2, h1.underlay_ip(), 4789, 1);

    // Wait until every datagram is accounted for: read by overlayd or dropped by host 1's kernel.
    let settled = wait_until(Duration::from_secs(10), || {
        let s = Stats::get(h1);
        s.rx_datagrams.saturating_sub(before.rx_datagrams)
            + kernel_udp_drops(h1).saturating_sub(kernel_before)
            >= GARBAGE_COUNT
    });
    std::thread::sleep(Duration::from_millis(300)); // anything still in flight would show up now
    let after = Stats::get(h1);
    let kernel_lost = kernel_udp_drops(h1).saturating_sub(kernel_before);
    let c1_rx = c1.link_stat("eth0", "rx_packets").saturating_sub(c1_before);

    let rx = after.rx_datagrams.saturating_sub(before.rx_datagrams);
    let to_tap = after.tx_frames.saturating_sub(before.tx_frames);
    let dropped = after.drops_total().saturating_sub(before.drops_total());
    let underlay_dropped = after.underlay_drops().saturating_sub(before.underlay_drops());
    let empty = garbage::datagrams(1).iter().filter(|d| d.is_empty()).count();
    let detail = format!(
        "garbage sent: {GARBAGE_COUNT} ({empty} of them empty); rx_datagrams +{rx}, tx_frames (to TAP) +{to_tap}, drops +{dropped} (underlay reasons +{underlay_dropped}), \
         kernel UDP InErrors +{kernel_lost}, container 1 rx_packets +{c1_rx}\nbefore: {before:?}\nafter: {after:?}"
    );
    assert!(settled, "garbage not all accounted for within 10 s: {detail}");
    assert!(
        rx + kernel_lost >= GARBAGE_COUNT && rx + kernel_lost <= GARBAGE_COUNT + NOISE_TOLERANCE,
        "overlayd read + kernel dropped should be the {GARBAGE_COUNT} garbage datagrams: {detail}"
    );
    // Exact accounting: every datagram read is delivered to the TAP or counted under exactly one reason.
    assert_eq!(rx, to_tap + dropped, "rx_datagrams ≠ delivered + drops: {detail}");
    assert!(to_tap <= NOISE_TOLERANCE, "garbage reached the TAP: {detail}");
    assert!(
        underlay_dropped + NOISE_TOLERANCE >= rx,
        "garbage dropped for non-underlay reasons: {detail}"
    );
    assert!(c1_rx <= NOISE_TOLERANCE, "container 1 received garbage: {detail}");

    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);
}

/// Helper, not a test: sends the garbage when re-executed by `send_garbage` inside a host namespace.
#[test]
fn garbage_sender() {
    garbage::sender_main();
}

// ---------------------------------------------------------------------------------------------------------
// d. signals
// ---------------------------------------------------------------------------------------------------------

fn exits_cleanly_on(sig: &str) {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let h1 = tb.host(1);
    let mut d = start_overlayd(h1, &[tb.host(2).underlay_ip()], None, &[]);
    assert!(h1.link_exists("ovl1"), "TAP ovl1 missing while overlayd runs");
    d.signal(sig).unwrap_or_else(|e| panic!("{e}"));
    let st = d.wait_timeout(Duration::from_secs(5));
    let st = st.unwrap_or_else(|| panic!("overlayd still running 5 s after SIG{sig}:\n{}", d.log()));
    assert_eq!(st.code(), Some(0), "overlayd after SIG{sig}: {st}\n{}", d.log());
    let e = h1
        .exec("ip", &["link", "show", "ovl1"])
        .err()
        .unwrap_or_else(|| panic!("TAP ovl1 still exists after overlayd exited on SIG{sig}"));
    assert!(
        e.stderr.contains("does not exist"),
        "unexpected `ip link show ovl1` failure: {e}"
    );
}

#[test]
fn sigterm_removes_tap_and_exits_0() {
    exits_cleanly_on("TERM");
}

#[test]
fn sigint_removes_tap_and_exits_0() {
    exits_cleanly_on("INT");
}

// ---------------------------------------------------------------------------------------------------------
// e. usage errors
// ---------------------------------------------------------------------------------------------------------

/// Runs overlayd with `args` inside a fresh host namespace (so that a daemon which wrongly starts touches
/// nothing outside it) and returns (exit code, output).
fn run_usage(args: &[&str]) -> (Option<i32>, String) {
    let tb = Testbed::builder().hosts(1).containers(false).build();
    let mut d = spawn_overlayd(tb.host(1), args);
    let st = d.wait_timeout(Duration::from_secs(5));
    let st = st.unwrap_or_else(|| {
        panic!(
            "`overlayd {}` still running after 5 s:\n{}",
            args.join(" "),
            d.log()
        )
    });
    (st.code(), d.log())
}

#[test]
fn vni_out_of_range_is_a_usage_error() {
    let (code, out) = run_usage(&["--vni", "16777216", "--peer", "10.0.0.2"]);
    assert_eq!(
        code,
        Some(2),
        "overlayd --vni 16777216 must exit 2 (usage error); output:\n{out}"
    );
    let lower = out.to_lowercase();
    assert!(lower.contains("vni"), "error should name the VNI:\n{out}");
    assert!(
        ["16777215", "2^24", "24-bit", "24 bit"]
            .iter()
            .any(|s| lower.contains(s)),
        "error should state the valid VNI range (… 16777215):\n{out}"
    );
}

#[test]
fn bad_peer_is_a_usage_error() {
    let (code, out) = run_usage(&["--peer", "notanip"]);
    assert_eq!(
        code,
        Some(2),
        "overlayd --peer notanip must exit 2 (usage error); output:\n{out}"
    );
    assert!(
        out.contains("notanip"),
        "error should quote the bad value:\n{out}"
    );
}
