//! End-to-end tests for issue 13's wire behaviour: flow entropy in the outer UDP source port, and interop with
//! a kernel VXLAN host that keeps its default offloads (partial inner checksums, UDP-tunnel GSO packets).
//!
//! The underlay is observed with tcpdump in the underlay namespace (a pcap file parsed by `common::capture`),
//! so the assertions are about what is really on the wire.

mod common;

use common::capture::{Capture, VxlanPkt};
use common::overlay::{ctl_json, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{tcp_transfer, wait_until, BridgeMode, Daemon, Host, Netns, Testbed};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Starts overlayd on `host` (static peers, `--local`, optional VNI and extra flags) and waits until it answers.
fn start_overlayd(host: &Host, peers: &[Ipv4Addr], vni: u32, extra: &[&str]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.extend(["--peer".into(), p.to_string()]);
    }
    args.extend(["--local".into(), host.underlay_ip().to_string()]);
    args.extend(["--vni".into(), vni.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = spawn_overlayd(host, &args);
    let tap = format!("ovl{vni}");
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists(&tap) && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    assert!(
        ready && d.is_running(),
        "`{}` not ready within 10 s:\n{}",
        d.cmdline(),
        d.log()
    );
    d
}

type Flow = (Ipv4Addr, u16, Ipv4Addr, u16);

/// Inner TCP flow (src, sport, dst, dport) → (outer UDP source ports seen for it, datagrams), for datagrams
/// from `from`.
fn ports_per_flow(pkts: &[VxlanPkt], from: Ipv4Addr) -> BTreeMap<Flow, (BTreeSet<u16>, usize)> {
    let mut m: BTreeMap<Flow, (BTreeSet<u16>, usize)> = BTreeMap::new();
    for p in pkts.iter().filter(|p| p.src == from && p.dport == 4789) {
        if let Some(t) = p.inner {
            let e = m.entry((t.src, t.sport, t.dst, t.dport)).or_default();
            e.0.insert(p.sport);
            e.1 += 1;
        }
    }
    m
}

/// 16 TCP connections container 1 → container 2 at once: on the underlay, each inner flow (both directions)
/// keeps one outer source port, from the ephemeral range, and the 16 flows use at least 8 distinct ports
/// (64 source ports by default; 16 flows on fewer than 8 of 64 ports has a probability below 1e-9).
#[test]
fn sixteen_flows_spread_over_source_ports_each_keeps_one() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let cap = Capture::start(tb.underlay(), "h1", "udp port 4789");
    let _d1 = start_overlayd(h1, &[h2.underlay_ip()], 1, &[]);
    let _d2 = start_overlayd(h2, &[h1.underlay_ip()], 1, &[]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 1);
    std::thread::scope(|s| {
        let flows: Vec<_> = (0..16u16)
            .map(|k| s.spawn(move || tcp_transfer(c1, c2, 6001 + k, 1, Duration::from_secs(60))))
            .collect();
        for (k, f) in flows.into_iter().enumerate() {
            f.join()
                .expect("transfer thread")
                .unwrap_or_else(|e| panic!("flow {k}: {e}"));
        }
    });
    let pkts = cap.stop();
    // Every data datagram goes to the VXLAN port, and none leaves from it. (Liveness probes have their own
    // socket, and their replies go back to it.)
    let between: Vec<_> = pkts
        .iter()
        .filter(|p| (p.src == h1.underlay_ip() || p.src == h2.underlay_ip()) && !p.is_probe())
        .collect();
    assert!(!between.is_empty());
    for p in between {
        assert!(p.dport == 4789 && p.sport != 4789, "{p:?}");
    }

    for (from, to, dir) in [(h1, h2, "data"), (h2, h1, "ACKs")] {
        let flows = ports_per_flow(&pkts, from.underlay_ip());
        let ours: BTreeMap<_, _> = flows
            .iter()
            .filter(|((_, sport, _, dport), _)| {
                (6001..=6016).contains(dport) || (6001..=6016).contains(sport)
            })
            .collect();
        // Every connection (a socat retry after an early RST is a connection of its own) on one port.
        let dports: BTreeSet<u16> = ours
            .keys()
            .map(|(_, sport, _, dport)| if dir == "data" { *dport } else { *sport })
            .collect();
        assert_eq!(
            dports.len(),
            16,
            "{dir} {} → {}: expected the 16 inner TCP flows on the underlay, saw {ours:?}",
            from.underlay_ip(),
            to.underlay_ip()
        );
        for (flow, (ports, _)) in &ours {
            assert_eq!(
                ports.len(),
                1,
                "{dir}: inner flow {flow:?} used several source ports {ports:?}"
            );
        }
        // The connection that carried each transfer (the most datagrams per server port), and its port.
        let mut carrier: BTreeMap<u16, (usize, u16)> = BTreeMap::new();
        for ((_, sport, _, dport), (ports, n)) in &ours {
            let server = if dir == "data" { *dport } else { *sport };
            let port = ports.first().copied().unwrap_or(0);
            let e = carrier.entry(server).or_insert((0, port));
            if *n > e.0 {
                *e = (*n, port);
            }
        }
        let all: BTreeSet<u16> = carrier.values().map(|(_, p)| *p).collect();
        println!(
            "{dir} {} → {}: the 16 flows on {} distinct outer source ports {all:?} ({} connections incl. \
             retried connects)",
            from.underlay_ip(),
            to.underlay_ip(),
            all.len(),
            ours.len()
        );
        assert!(
            all.len() >= 8,
            "{dir}: 16 flows on only {} ports: {all:?}",
            all.len()
        );
        assert!(
            all.iter().all(|p| (32768..=60999).contains(p)),
            "{dir}: source ports outside 32768–60999: {all:?}"
        );
    }
}

/// `--src-ports 1`: every datagram leaves from one port (the flag is honoured, and the spreading above is
/// not an accident of something else).
#[test]
fn one_source_port_when_configured() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let cap = Capture::start(tb.underlay(), "h1", "udp port 4789");
    let _d1 = start_overlayd(h1, &[h2.underlay_ip()], 1, &["--src-ports", "1"]);
    let _d2 = start_overlayd(h2, &[h1.underlay_ip()], 1, &[]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 1);
    std::thread::scope(|s| {
        let flows: Vec<_> = (0..4u16)
            .map(|k| s.spawn(move || tcp_transfer(c1, c2, 6101 + k, 1, Duration::from_secs(60))))
            .collect();
        for f in flows {
            f.join()
                .expect("transfer thread")
                .unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let pkts = cap.stop();
    let ports: BTreeSet<u16> = pkts
        .iter()
        .filter(|p| p.src == h1.underlay_ip() && p.dport == 4789 && !p.is_probe())
        .map(|p| p.sport)
        .collect();
    assert_eq!(ports.len(), 1, "{ports:?} in {} captured datagrams", pkts.len());
    assert_ne!(
        ports.first(),
        Some(&4789),
        "sent from the send socket, not the VXLAN port"
    );
}

/// A kernel VXLAN host whose underlay veth keeps its default offloads (TX checksum, TSO): its inner TCP
/// checksums arrive partial and its TSO superframes as whole UDP-tunnel GSO datagrams. TCP both ways with an
/// overlayd host must still work, and the capture must show that both really were on the wire.
#[test]
fn kernel_vxlan_with_default_offloads_interoperates() {
    kernel_default_offloads(&[]);
}

/// The same against overlayd without offloads (no virtio header on its TAP): it completes the checksums and
/// cuts the superframes itself.
#[test]
fn kernel_vxlan_with_default_offloads_and_plain_overlayd() {
    kernel_default_offloads(&["--no-offload"]);
}

/// The same against overlayd with 4 workers (multiqueue TAP, receive sockets in an SO_REUSEPORT group).
#[test]
fn kernel_vxlan_with_default_offloads_and_four_workers() {
    kernel_default_offloads(&["--workers", "4"]);
}

fn kernel_default_offloads(overlayd_flags: &[&str]) {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let cap = Capture::start(tb.underlay(), "h2", "udp port 4789");
    let _d = start_overlayd(h1, &[h2.underlay_ip()], 42, overlayd_flags);
    h1.attach_container(Duration::from_secs(10));
    h2.add_bridge();
    h2.add_kernel_vxlan(42, 4789, &[h1.underlay_ip()]);
    let tx = h2.run("ethtool", &["-k", "eth0"]);
    assert!(
        tx.lines().any(|l| l.trim() == "tx-checksumming: on"),
        "the kernel host must keep TX checksum offload on:\n{tx}"
    );
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);
    let stats = || ctl_json(h1, "stats");
    tcp_transfer(c2, c1, 5002, 8, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("kernel → overlayd: {e}\noverlayd stats: {}", stats()));
    tcp_transfer(c1, c2, 5001, 8, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("overlayd → kernel: {e}\noverlayd stats: {}", stats()));
    let pkts = cap.stop();
    let from_kernel: Vec<_> = pkts
        .iter()
        .filter(|p| p.src == h2.underlay_ip())
        .filter_map(|p| p.inner)
        .collect();
    let partial = from_kernel.iter().filter(|t| t.partial).count();
    let superframes = from_kernel.iter().filter(|t| t.tcp_len > 1500).count();
    println!(
        "from the kernel host: {} inner TCP datagrams, {partial} with a partial checksum, {superframes} \
         UDP-tunnel GSO superframes; overlayd stats: {}",
        from_kernel.len(),
        stats()
    );
    assert!(
        partial > 0,
        "no partial checksum seen from the kernel host: the test would not exercise the fix"
    );
    assert!(
        superframes > 0,
        "no UDP-tunnel GSO superframe seen from the kernel host: the test would not exercise that path"
    );
    let s = stats();
    let drops = s.get("drops").cloned().unwrap_or_default();
    for reason in ["bad_offload", "tap_write_error", "bad_flags", "short"] {
        assert_eq!(
            drops.get(reason).and_then(|v| v.as_u64()),
            Some(0),
            "{reason}: {s}"
        );
    }
}
