//! End-to-end tests of path MTU handling (issue 9 §3): host 1's own underlay link shrinks to 1400 bytes under a
//! running daemon while the overlay MTU stays 1450. A DF ping that no longer fits gets ICMP "fragmentation
//! needed" with the inner MTU (1400 − 50 = 1350) back from overlayd and is counted as `too_big`; the container's
//! kernel caches that MTU; TCP keeps going (TSO superframes are cut to the path, full-size single segments get
//! the ICMP). Static mode, IPv4 underlay; the IPv6 underlay case is in `ipv6_underlay.rs`.
//! Traffic only to addresses inside the testbed's namespaces.

mod common;

use common::overlay::{ctl_json, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{tcp_transfer, wait_until, Daemon, Host, Netns, Testbed, OVERLAY_MTU};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Path MTU host 1's underlay link is lowered to.
const SHRUNK: u32 = 1400;
/// What overlayd must announce: the shrunken link minus 50 bytes of VXLAN overhead over IPv4.
const INNER: u32 = SHRUNK - 50;

fn start(host: &Host, peer: Ipv4Addr) -> Daemon {
    start_with(host, &[peer], &[])
}

fn start_with(host: &Host, peers: &[Ipv4Addr], extra: &[&str]) -> Daemon {
    let peers: Vec<String> = peers.iter().map(Ipv4Addr::to_string).collect();
    let own = host.underlay_ip().to_string();
    let dir = host
        .log_dir()
        .join(format!("state-{}", host.ns()))
        .display()
        .to_string();
    let mut args = vec!["--local", &own, "--state-dir", &dir];
    for p in &peers {
        args.extend(["--peer", p]);
    }
    args.extend_from_slice(extra);
    let mut d = spawn_overlayd(host, &args);
    let ready = wait_until(Duration::from_secs(20), || {
        !d.is_running() || (host.link_exists("ovl1") && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 20 s:\n{}", d.cmdline(), d.log());
    d
}

fn drop_count(h: &Host, reason: &str) -> u64 {
    ctl_json(h, "stats")["drops"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no drops.{reason} in the stats of {}", h.ns()))
}

#[test]
fn df_ping_over_a_shrunken_underlay_gets_fragmentation_needed() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let d1 = start(h1, h2.underlay_ip());
    let _d2 = start(h2, h1.underlay_ip());
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    let to = c2.ip().to_string();
    // Positive control: a full-size DF ping (1422 + 8 + 20 = 1450 bytes) fits before the drop.
    c1.run(
        "ping",
        &["-n", "-q", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &to],
    );
    let before = drop_count(h1, "too_big");
    h1.run("ip", &["link", "set", "eth0", "mtu", &SHRUNK.to_string()]);

    let big = c1.exec(
        "ping",
        &[
            "-n", "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1422", &to,
        ],
    );
    let e = big.expect_err("a 1450-byte DF ping came back over a 1400-byte underlay");
    let text = format!("{}\n{}", e.stdout, e.stderr);
    eprintln!("ping after the MTU drop:\n{text}");
    // iputils prints the ICMP ("Frag needed and DF set (mtu = 1350)") and then, from the kernel's cached
    // PMTU, "local error: message too long, mtu=1350".
    assert!(
        text.contains("Frag needed") && text.contains(&format!("mtu = {INNER}")),
        "no ICMP fragmentation needed with mtu {INNER} reached container 1:\n{text}\n{}",
        d1.log()
    );
    let route = c1.run("ip", &["route", "get", &to]);
    assert!(
        route.contains(&format!("mtu {INNER}")),
        "container 1's kernel did not cache PMTU {INNER} towards {to}: {route}"
    );
    let too_big = drop_count(h1, "too_big");
    assert!(
        too_big > before,
        "the oversized frame was not counted as too_big ({before} → {too_big})"
    );
    // The overlay still works for what fits, and pings sized for the new MTU pass.
    ping_ok(c1, c2.ip(), 2);
    let fits = (INNER - 28).to_string();
    c1.run(
        "ping",
        &["-n", "-q", "-c", "2", "-W", "2", "-M", "do", "-s", &fits, &to],
    );
}

#[test]
fn tcp_keeps_working_when_the_underlay_mtu_drops() {
    tcp_after_mtu_drop(&[]);
}

/// Without offloads every frame from the TAP is at most 1450 bytes: TCP adapts through the ICMP alone.
#[test]
fn tcp_keeps_working_when_the_underlay_mtu_drops_without_offloads() {
    let too_big = tcp_after_mtu_drop(&["--no-offload"]);
    assert!(
        too_big > 0,
        "TCP cannot have adapted without an ICMP: too_big is {too_big}"
    );
}

/// Returns how many frames host 1 counted as `too_big` after the drop.
fn tcp_after_mtu_drop(extra: &[&str]) -> u64 {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let d1 = start_with(h1, &[h2.underlay_ip()], extra);
    let _d2 = start_with(h2, &[h1.underlay_ip()], extra);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    tcp_transfer(c1, c2, 5201, 2, Duration::from_secs(60)).unwrap_or_else(|e| panic!("before the drop: {e}"));
    let send_errors = drop_count(h1, "send_error");
    let too_big = drop_count(h1, "too_big");
    h1.run("ip", &["link", "set", "eth0", "mtu", &SHRUNK.to_string()]);
    // A fresh connection (MSS 1410 from the 1450-byte overlay MTU) over the shrunken path: it must complete,
    // byte-identical, within a functional deadline instead of stalling.
    let t = std::time::Instant::now();
    tcp_transfer(c1, c2, 5202, 8, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("after the drop: {e}\n{}", d1.log()));
    let took = t.elapsed();
    let stats = ctl_json(h1, "stats");
    eprintln!(
        "{extra:?}: 8 MiB after the MTU drop in {took:?}; host 1 drops {}",
        stats["drops"]
    );
    // Nothing went into the kernel too big once the daemon knew the path (at most the frames in flight when
    // the link shrank fail with EMSGSIZE).
    let lost = drop_count(h1, "send_error") - send_errors;
    assert!(lost < 64, "{lost} datagrams failed to send after the MTU drop");
    drop_count(h1, "too_big") - too_big
}

#[test]
fn start_up_names_the_fix_for_an_mtu_that_does_not_fit() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    h1.run("ip", &["link", "set", "eth0", "mtu", &SHRUNK.to_string()]);
    let peer = h2.underlay_ip().to_string();
    let own = h1.underlay_ip().to_string();
    let dir = h1
        .log_dir()
        .join(format!("state-{}", h1.ns()))
        .display()
        .to_string();
    let mtu = OVERLAY_MTU.to_string();
    let mut d = spawn_overlayd(
        h1,
        &[
            "--peer",
            &peer,
            "--local",
            &own,
            "--state-dir",
            &dir,
            "--mtu",
            &mtu,
        ],
    );
    let fix = format!("--mtu {INNER}");
    let warned = wait_until(Duration::from_secs(20), || {
        !d.is_running() || d.log().contains(&fix)
    });
    assert!(
        d.is_running(),
        "a too-large --mtu is a warning, not fatal:\n{}",
        d.log()
    );
    assert!(warned, "no warning naming `{fix}`:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("WARN") && log.contains("eth0 has MTU 1400"), "{log}");

    // The same host with a fitting MTU: no warning.
    let h2dir = h2
        .log_dir()
        .join(format!("state-{}", h2.ns()))
        .display()
        .to_string();
    let mut d2 = spawn_overlayd(h2, &["--peer", &own, "--local", &peer, "--state-dir", &h2dir]);
    let up = wait_until(Duration::from_secs(20), || {
        !d2.is_running() || d2.log().contains("overlayd up")
    });
    assert!(up && d2.is_running(), "{}", d2.log());
    assert!(!d2.log().contains("does not fit the underlay"), "{}", d2.log());
}

/// The path MTU is per VTEP: a route to host 3 with MTU 1300 (as a router's ICMP would leave in the kernel's
/// cache) limits only frames to container 3; container 2, behind a full 1500-byte path, still gets 1450.
#[test]
fn path_mtu_is_per_vtep() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let all = [h1.underlay_ip(), h2.underlay_ip(), h3.underlay_ip()];
    let others = |me: Ipv4Addr| all.iter().copied().filter(|a| *a != me).collect::<Vec<_>>();
    let d1 = start_with(h1, &others(all[0]), &[]);
    let _d2 = start_with(h2, &others(all[1]), &[]);
    let _d3 = start_with(h3, &others(all[2]), &[]);
    let (c1, c2, c3) = (tb.container(1), tb.container(2), tb.container(3));
    ping_ok(c1, c2.ip(), 2);
    ping_ok(c1, c3.ip(), 2);
    let to3 = format!("{}/32", all[2]);
    h1.run("ip", &["route", "add", &to3, "dev", "eth0", "mtu", "1300"]);
    let (s2, s3) = (c2.ip().to_string(), c3.ip().to_string());
    let full = ["-n", "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1422"];
    let to_c3 = c1.exec("ping", &[&full[..], &[s3.as_str()]].concat());
    let e = to_c3.expect_err("a 1450-byte DF ping reached container 3 over a 1300-byte path");
    let text = format!("{}\n{}", e.stdout, e.stderr);
    assert!(
        text.contains("Frag needed") && text.contains("mtu = 1250"),
        "no fragmentation needed with mtu 1250 (1300 - 50) from the path to host 3:\n{text}\n{}",
        d1.log()
    );
    c1.run("ping", &[&full[..], &[s2.as_str()]].concat());
}
