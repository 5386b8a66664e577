//! End-to-end proof of issue 8 ("Trust") §1 and §6 on the data plane: who may inject frames into the overlay.
//!
//! Owns: a non-peer's datagrams in static mode (dropped as `non_member`, learned only with
//! `--learn-any-source`), datagrams that claim a MAC living behind the receiver's own bridge (dropped as
//! `spoofed_src`, the container keeps its connectivity) in static and in cluster mode, the latter with a
//! member's source address forged from a raw socket, and a MAC flapping between two hosts' containers (frozen
//! at the dampening threshold, counted as `mac_flaps`).
//! Must never: send to any address outside the testbed, or assert on timings other than functional deadlines.
//!
//! Crafted datagrams are sent from inside a host namespace by re-executing this test binary there
//! (`vxlan_sender` below does the sending when `OVT_VXLAN_SEND` is set, nothing otherwise), as
//! `tests/common/garbage.rs` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{counter, ctl_json, drops, form_cluster, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{wait_until, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// The inner source MAC of the attacker's own frames.
const ATTACKER_MAC: &str = "02:00:00:00:09:09";
/// Datagrams per crafted burst.
const BURST: u64 = 10;

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// Starts overlayd on `host` with `args` and waits (20 s: a join includes a QUIC handshake) until its admin
/// endpoint answers and its TAP exists. Panics with the log if it exits first.
fn start(host: &Host, args: &[&str]) -> Daemon {
    let mut d = spawn_overlayd(host, args);
    let ready = wait_until(Duration::from_secs(20), || {
        !d.is_running() || (host.link_exists("ovl1") && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 20 s:\n{}", d.cmdline(), d.log());
    d
}

/// Static mode: `--peer` every address of `peers`, `--local` the host's own, plus `extra`.
fn start_static(host: &Host, peers: &[&Host], extra: &[&str]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.push("--peer".into());
        args.push(p.underlay_ip().to_string());
    }
    args.push("--local".into());
    args.push(host.underlay_ip().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(host, &args)
}

/// `overlayctl stats --json` on `host`.
fn stats(host: &Host) -> Value {
    ctl_json(host, "stats")
}

/// The FDB row of `mac` on `host` as (vtep, origin).
fn fdb_entry(host: &Host, mac: &str) -> Option<(String, String)> {
    let fdb = ctl_json(host, "fdb");
    fdb.as_array()?.iter().find_map(|r| {
        let m = r.get("mac").and_then(Value::as_str)?;
        m.eq_ignore_ascii_case(mac).then(|| {
            let f = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (f("vtep"), f("origin"))
        })
    })
}

/// Which port of `host`'s bridge `ovl0` holds `mac` (`bridge fdb show br ovl0`), if any.
fn bridge_port(host: &Host, mac: &str) -> Option<String> {
    let out = host.run("bridge", &["fdb", "show", "br", "ovl0"]);
    out.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let m = w.next()?;
        if !m.eq_ignore_ascii_case(mac) {
            return None;
        }
        let mut w = l.split_whitespace().skip_while(|x| *x != "dev");
        w.next();
        w.next().map(str::to_string)
    })
}

/// Waits (10 s) until `cond(stats)` holds on `host`; panics with the last stats and `what` otherwise.
fn wait_stats(host: &Host, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(10), || {
        last = stats(host);
        cond(&last)
    });
    assert!(ok, "host {}: {what} within 10 s; stats: {last}", host.index());
    last
}

// ---------------------------------------------------------------------------------------------------------
// Crafted VXLAN datagrams
// ---------------------------------------------------------------------------------------------------------

/// `count` VXLAN datagrams (VNI `vni`) carrying a gratuitous ARP from `inner_src`, sent from `from`'s
/// namespace to `to`:4789 — from a plain UDP socket, or with `spoof_src` as the outer IPv4 source from a raw
/// socket (`IPPROTO_RAW`, so the IP header is ours).
fn send_vxlan(from: &Host, to: Ipv4Addr, spoof_src: Option<Ipv4Addr>, inner_src: &str, count: u64) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let exe = exe.to_string_lossy();
    let spec = format!(
        "OVT_VXLAN_SEND={to};{};{inner_src};{count}",
        spoof_src.map_or(String::new(), |s| s.to_string())
    );
    let out = from.run(
        "env",
        &[
            &spec,
            &exe,
            "--exact",
            "vxlan_sender",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    assert!(
        out.contains(&format!("vxlan sent: {count}")),
        "vxlan sender output:\n{out}"
    );
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    assert_eq!(parts.len(), 6, "bad MAC {s:?}");
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).unwrap_or_else(|e| panic!("bad MAC {s:?}: {e}"));
    }
    m
}

/// VXLAN (VNI 1) + broadcast gratuitous ARP "10.1.0.99 is at `src`", padded to the Ethernet minimum.
fn vxlan_garp(src: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    d.extend_from_slice(&[0xff; 6]);
    d.extend_from_slice(&src);
    d.extend_from_slice(&[0x08, 0x06]);
    d.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    d.extend_from_slice(&src);
    d.extend_from_slice(&[10, 1, 0, 99]);
    d.extend_from_slice(&[0; 6]);
    d.extend_from_slice(&[10, 1, 0, 99]);
    d.resize(8 + 60, 0);
    d
}

/// IPv4 (header checksum filled in) + UDP (checksum 0, allowed over IPv4) around `payload`.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(total - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Helper, not a test: sends crafted datagrams when re-executed by [`send_vxlan`] inside a host namespace.
#[test]
fn vxlan_sender() {
    let Ok(spec) = std::env::var("OVT_VXLAN_SEND") else {
        return;
    };
    let f: Vec<&str> = spec.split(';').collect();
    assert_eq!(f.len(), 4, "OVT_VXLAN_SEND={spec}");
    let to: Ipv4Addr = f[0].parse().unwrap();
    let payload = vxlan_garp(parse_mac(f[2]));
    let count: u64 = f[3].parse().unwrap();
    if f[1].is_empty() {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("bind: {e}"));
        for _ in 0..count {
            sock.send_to(&payload, (to, 4789))
                .unwrap_or_else(|e| panic!("send_to {to}: {e}"));
        }
    } else {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let src: Ipv4Addr = f[1].parse().unwrap();
        // IPPROTO_RAW implies IP_HDRINCL: the kernel sends our header, source address included.
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
            .unwrap_or_else(|e| panic!("raw socket (needs root / CAP_NET_RAW): {e}"));
        let pkt = ipv4_udp(src, to, 40_000, 4789, &payload);
        let dst = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(to, 0)));
        for _ in 0..count {
            sock.send_to(&pkt, &dst)
                .unwrap_or_else(|e| panic!("raw send_to {to}: {e}"));
        }
    }
    println!("vxlan sent: {count}");
}

// ---------------------------------------------------------------------------------------------------------
// a. static mode: only --peers may send
// ---------------------------------------------------------------------------------------------------------

/// Host 1 (default) and host 2 (`--learn-any-source`) are each other's peers; host 3 runs no overlayd and is
/// nobody's peer. Its datagrams — its own MAC, and container 2's MAC as in the issue's attack — are dropped by
/// host 1 as `non_member` and learn nothing; host 2 learns its MAC.
#[test]
fn static_mode_non_peer_is_dropped_unless_learn_any_source() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let _d1 = start_static(h1, &[h2], &[]);
    let _d2 = start_static(h2, &[h1], &["--learn-any-source"]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    let before = stats(h1);

    send_vxlan(h3, h1.underlay_ip(), None, ATTACKER_MAC, BURST);
    send_vxlan(h3, h1.underlay_ip(), None, c2.mac(), BURST);
    let n0 = drops(&before, "non_member");
    let after = wait_stats(h1, "20 datagrams dropped as non_member", |s| {
        drops(s, "non_member") >= n0 + 2 * BURST
    });
    std::thread::sleep(Duration::from_millis(300));
    let after_settled = stats(h1);
    assert_eq!(
        drops(&after_settled, "non_member") - n0,
        2 * BURST,
        "exactly the attacker's datagrams: {after}"
    );
    assert_eq!(fdb_entry(h1, ATTACKER_MAC), None, "a non-peer's MAC was learned");
    assert_eq!(
        fdb_entry(h1, c2.mac()),
        Some(("10.0.0.2".to_string(), "learned".to_string())),
        "container 2's entry moved"
    );
    ping_ok(c1, c2.ip(), 2);

    // With --learn-any-source (host 2), the same datagrams are learned as the kernel would.
    let b2 = stats(h2);
    send_vxlan(h3, h2.underlay_ip(), None, ATTACKER_MAC, BURST);
    assert!(
        wait_until(Duration::from_secs(10), || fdb_entry(h2, ATTACKER_MAC).is_some()),
        "host 2 (--learn-any-source) did not learn the MAC: {}",
        ctl_json(h2, "fdb")
    );
    assert_eq!(
        fdb_entry(h2, ATTACKER_MAC),
        Some(("10.0.0.3".to_string(), "learned".to_string()))
    );
    assert_eq!(drops(&stats(h2), "non_member"), drops(&b2, "non_member"));
}

// ---------------------------------------------------------------------------------------------------------
// b, c. a datagram claiming a MAC behind the receiver's own bridge
// ---------------------------------------------------------------------------------------------------------

/// After a spoofing burst on `h1` (container 1's MAC as inner source): container 1's entry is still `local`,
/// its bridge port is still its veth, `spoofed_src` rose by `BURST` and `non_member` did not move.
fn assert_spoof_refused(h1: &Host, before: &Value) {
    let c1 = h1.container();
    let s0 = drops(before, "spoofed_src");
    let after = wait_stats(h1, "the spoofed datagrams counted as spoofed_src", |s| {
        drops(s, "spoofed_src") >= s0 + BURST
    });
    std::thread::sleep(Duration::from_millis(300));
    let settled = stats(h1);
    assert_eq!(drops(&settled, "spoofed_src") - s0, BURST, "{after}");
    assert_eq!(
        drops(&settled, "non_member"),
        drops(before, "non_member"),
        "the spoofed source passed the membership check: {settled}"
    );
    let local = (h1.underlay_ip().to_string(), "local".to_string());
    assert_eq!(fdb_entry(h1, c1.mac()), Some(local), "container 1's entry");
    assert_eq!(
        bridge_port(h1, c1.mac()).as_deref(),
        Some(format!("vc{}", h1.index()).as_str()),
        "the bridge still has container 1 on its veth (a frame that reached the TAP would have moved it)"
    );
}

#[test]
fn static_mode_local_mac_spoof_is_dropped() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_static(h1, &[h2], &[]);
    let _d2 = start_static(h2, &[h1], &[]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    let local = (h1.underlay_ip().to_string(), "local".to_string());
    assert!(wait_until(Duration::from_secs(5), || fdb_entry(h1, c1.mac())
        == Some(local.clone())));
    let before = stats(h1);
    // From host 2 (a configured peer, its real address): only the local-MAC check stands in the way.
    send_vxlan(h2, h1.underlay_ip(), None, c1.mac(), BURST);
    assert_spoof_refused(h1, &before);
    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);

    // Container 1 leaves host 1's bridge (its veth is unplugged): the entry stops being local, and a remote
    // claim for the MAC is accepted like any other.
    h1.run("ip", &["link", "set", "dev", "vc1", "nomaster"]);
    assert!(
        wait_until(Duration::from_secs(5), || fdb_entry(h1, c1.mac())
            != Some(local.clone())),
        "container 1's MAC is still local on host 1 after leaving its bridge: {}",
        ctl_json(h1, "fdb")
    );
    send_vxlan(h2, h1.underlay_ip(), None, c1.mac(), 1);
    let remote = Some((h2.underlay_ip().to_string(), "learned".to_string()));
    assert!(
        wait_until(Duration::from_secs(5), || fdb_entry(h1, c1.mac()) == remote),
        "host 1 did not learn the MAC from host 2 once it left the bridge: {}",
        ctl_json(h1, "fdb")
    );
}

#[test]
fn cluster_mode_local_mac_spoof_with_forged_member_address_is_dropped() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let _daemons = form_cluster(&tb, &[h1, h2], "a", &|_| Vec::new());
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    let local = (h1.underlay_ip().to_string(), "local".to_string());
    assert!(wait_until(Duration::from_secs(5), || fdb_entry(h1, c1.mac())
        == Some(local.clone())));
    let before = stats(h1);
    // From host 3, not a member, forging member host 2's address from a raw socket.
    send_vxlan(h3, h1.underlay_ip(), Some(h2.underlay_ip()), c1.mac(), BURST);
    assert_spoof_refused(h1, &before);
    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);
}

// ---------------------------------------------------------------------------------------------------------
// d. MAC flapping between two hosts' containers
// ---------------------------------------------------------------------------------------------------------

/// Containers 2 and 3 share one MAC and take turns sending a broadcast. Host 1 follows the first 5 moves
/// (RFC 7432 §15 default: more than 5 moves in 180 s is a flap), then keeps the MAC where it is and counts
/// every refused move as `mac_flaps`. Hosts 2 and 3 each keep the MAC local and refuse the other's copy.
#[test]
fn flapping_mac_is_frozen_at_the_threshold_and_counted() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let _d1 = start_static(h1, &[h2, h3], &[]);
    let _d2 = start_static(h2, &[h1, h3], &[]);
    let _d3 = start_static(h3, &[h1, h2], &[]);
    let (c2, c3) = (tb.container(2), tb.container(3));
    let dup = c2.mac().to_string();
    c3.run("ip", &["link", "set", "dev", "eth0", "address", &dup]);

    let start = stats(h1);
    let mut owners = Vec::new();
    for i in 0..12u64 {
        let (sender, vtep) = if i % 2 == 0 { (c2, h2) } else { (c3, h3) };
        let rx0 = counter(&stats(h1), "rx_datagrams");
        // One broadcast ICMP echo (nobody answers: containers ignore broadcast echoes).
        let _ = sender.exec("ping", &["-n", "-b", "-c", "1", "-W", "0.2", "10.1.0.255"]);
        wait_stats(
            h1,
            &format!("broadcast {i} from host {} arrived", vtep.index()),
            |s| counter(s, "rx_datagrams") > rx0,
        );
        owners.push(fdb_entry(h1, &dup).map(|(v, _)| v));
    }
    let end = stats(h1);
    let (h2ip, h3ip) = (
        Some(h2.underlay_ip().to_string()),
        Some(h3.underlay_ip().to_string()),
    );
    // Broadcast 0 is learned, broadcasts 1..=5 are the five allowed moves, then it stays at host 3.
    let want: Vec<_> = (0..12)
        .map(|i| {
            if i < 6 && i % 2 == 0 {
                h2ip.clone()
            } else {
                h3ip.clone()
            }
        })
        .collect();
    assert_eq!(
        owners, want,
        "owner of {dup} on host 1 after each broadcast; stats {end}"
    );
    assert_eq!(counter(&end, "moves") - counter(&start, "moves"), 5, "{end}");
    assert_eq!(
        counter(&end, "mac_flaps") - counter(&start, "mac_flaps"),
        3,
        "broadcasts 6, 8 and 10 (from host 2) were refused moves: {end}"
    );
    // Neither container's host let the other's copy onto its bridge.
    for (h, own) in [(h2, "vc2"), (h3, "vc3")] {
        assert!(
            drops(&stats(h), "spoofed_src") > 0,
            "host {}: {}",
            h.index(),
            stats(h)
        );
        assert_eq!(bridge_port(h, &dup).as_deref(), Some(own), "host {}", h.index());
    }
}
