//! End-to-end tests of an IPv6 underlay (issue 10 §5): peers, the local address and gossip are IPv6
//! (`fd00::N`, see `TestbedBuilder::ipv6_underlay`), containers still talk IPv4 inside the overlay.
//!
//! Owns: static mode over IPv6 (ping, a byte-identical TCP transfer, the default TAP MTU of underlay − 70, outer
//! packets that are IPv6 and carry a UDP checksum), interop with a kernel VXLAN VTEP over IPv6, and cluster mode
//! over IPv6 (join, membership, ping). Traffic only to addresses inside the testbed's namespaces.

mod common;

use common::overlay::{ctl_json, ctl_socket, ping_ok, spawn_overlayd, start_overlayd, OVERLAYCTL};
use common::testbed::{tcp_transfer, wait_until, Daemon, Host, Netns, Testbed, OVERLAY_MTU_V6, UNDERLAY_MTU};
use serde_json::Value;
use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn state_dir(host: &Host, tag: &str) -> String {
    host.log_dir()
        .join(format!("state-{}-{tag}", host.ns()))
        .display()
        .to_string()
}

/// Static mode: `--local fd00::N --peer fd00::M …` for every other host `M` of `peers`; without `--local`
/// unless `local` (the daemon then takes the kernel's source address for the route to the first peer).
fn start_static(host: &Host, peers: &[Ipv6Addr], local: bool) -> Daemon {
    let own = host.underlay_ip6().to_string();
    let peers: Vec<String> = peers.iter().map(Ipv6Addr::to_string).collect();
    let mut args: Vec<&str> = Vec::new();
    if local {
        args.extend(["--local", &own]);
    }
    for p in &peers {
        args.extend(["--peer", p]);
    }
    let dir = state_dir(host, "s");
    args.extend(["--state-dir", &dir]);
    start_overlayd(host, &args)
}

/// A value of the IPv4 (`/proc/net/snmp`) or IPv6 (`/proc/net/snmp6`) UDP MIB in `host`'s namespace.
fn udp_mib(host: &Host, v6: bool, name: &str) -> u64 {
    if v6 {
        let s = host.run("cat", &["/proc/net/snmp6"]);
        let key = format!("Udp6{name}");
        s.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(&key)).then(|| w.next().and_then(|v| v.parse().ok()))?
            })
            .unwrap_or_else(|| panic!("no {key} in /proc/net/snmp6 of {}", host.ns()))
    } else {
        // Two "Udp:" lines: the names, then the values.
        let s = host.run("cat", &["/proc/net/snmp"]);
        let udp: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
        let (names, values) = (udp[0].split_whitespace(), udp[1].split_whitespace());
        names
            .zip(values)
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Udp {name} in /proc/net/snmp of {}", host.ns()))
    }
}

/// From `overlayctl metrics`: (sends with one segment, all sends) of `overlayd_gso_segments_per_send`.
fn gso_sends(host: &Host) -> (f64, f64) {
    let text = host.run(OVERLAYCTL, &["metrics"]);
    let val = |prefix: &str, needle: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix}…{needle} in /metrics:\n{text}"))
    };
    (
        val("overlayd_gso_segments_per_send_bucket{", "le=\"1\""),
        val("overlayd_gso_segments_per_send_count", ""),
    )
}

fn tap_mtu(host: &Host, tap: &str) -> u32 {
    let path = format!("/sys/class/net/{tap}/mtu");
    host.run("cat", &[&path]).trim().parse().unwrap_or_else(|e| {
        panic!("{path} in {}: {e}", host.ns());
    })
}

/// `tcpdump` on `host`'s `eth0` writing the VXLAN datagrams it sees (`udp port 4789`) as text, until killed.
fn start_capture(host: &Host, count: u32) -> Child {
    let count = count.to_string();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            host.ns(),
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-vv",
            "-l",
        ])
        .args(["-c", &count, "udp", "port", "4789"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tcpdump: {e} (apt-get install tcpdump)"));
    child
}

/// Waits up to 10 s for the capture to end (its `-c` count reached), then returns what it printed.
fn finish_capture(mut c: Child) -> String {
    let done = wait_until(Duration::from_secs(10), || matches!(c.try_wait(), Ok(Some(_))));
    if !done {
        let _ = c.kill();
    }
    let out = c.wait_with_output().unwrap_or_else(|e| panic!("tcpdump: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        done,
        "tcpdump did not see its packets within 10 s; it printed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Waits (5 s) until the capture's packet socket exists in `host`'s namespace.
fn wait_capture_armed(host: &Host, c: &Child) {
    let pid = c.id().to_string();
    assert!(
        wait_until(Duration::from_secs(5), || host
            .exec("cat", &[&format!("/proc/{pid}/net/packet")])
            .is_ok_and(|s| s.lines().count() > 1)),
        "tcpdump in {} did not open its capture socket within 5 s",
        host.ns()
    );
}

// ---------------------------------------------------------------------------------------------------------
// a. static mode over IPv6
// ---------------------------------------------------------------------------------------------------------

#[test]
fn static_mode_over_ipv6_underlay() {
    let tb = Testbed::builder().hosts(3).ipv6_underlay(true).build();
    let ips: Vec<Ipv6Addr> = tb.hosts().iter().map(Host::underlay_ip6).collect();
    // The underlay itself works over IPv6 before any daemon runs.
    let to2 = ips[1].to_string();
    tb.host(1)
        .exec("ping", &["-6", "-n", "-q", "-c", "1", "-W", "2", &to2])
        .unwrap_or_else(|e| panic!("IPv6 underlay not usable: {e}"));

    // A veth never fills in checksums it was asked to offload (the receiver trusts the skb's mark), so a capture
    // would show them unfilled; with TX checksum offload off the kernel computes them, as a physical NIC would.
    for h in tb.hosts() {
        h.exec("ethtool", &["-K", "eth0", "tx", "off"])
            .unwrap_or_else(|e| panic!("{e} (apt-get install ethtool)"));
    }
    let v4_out_before: Vec<u64> = tb
        .hosts()
        .iter()
        .map(|h| udp_mib(h, false, "OutDatagrams"))
        .collect();
    let mut daemons: Vec<Daemon> = Vec::new();
    for h in tb.hosts() {
        let peers: Vec<Ipv6Addr> = ips.iter().copied().filter(|ip| *ip != h.underlay_ip6()).collect();
        // Host 3 leaves the local address to the IPv6 route lookup.
        daemons.push(start_static(h, &peers, h.index() != 3));
    }
    // Default MTU: the underlay's minus 70 (40-byte IPv6 header).
    for h in tb.hosts() {
        assert_eq!(tap_mtu(h, "ovl1"), UNDERLAY_MTU - 70, "TAP MTU on {}", h.ns());
        assert_eq!(OVERLAY_MTU_V6, UNDERLAY_MTU - 70);
    }
    // `peers` lists the IPv6 VTEPs.
    let peers = ctl_json(tb.host(1), "peers");
    for ip in &ips[1..] {
        let s = peers.to_string();
        assert!(
            s.contains(&ip.to_string()),
            "peers on host 1 do not list {ip}: {peers}"
        );
    }

    // Arm a capture on host 2's underlay: 6 VXLAN datagrams.
    let cap = start_capture(tb.host(2), 6);
    wait_capture_armed(tb.host(2), &cap);
    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                ping_ok(tb.container(a), tb.container(b).ip(), 3);
            }
        }
    }
    let text = finish_capture(cap);
    eprintln!("capture on host 2:\n{text}");
    // Outer IPv6 between fd00:: addresses, UDP checksum present and correct: tcpdump -vv prints
    // "[udp sum ok]" for a verified checksum, "[no cksum]" for a zero one and "[bad udp cksum …]" otherwise.
    let vxlan_lines: Vec<&str> = text.lines().filter(|l| l.contains(".4789")).collect();
    assert!(
        vxlan_lines.len() >= 6,
        "fewer than 6 VXLAN datagrams captured:\n{text}"
    );
    for l in &vxlan_lines {
        assert!(
            l.contains("fd00::"),
            "outer packet is not IPv6 between fd00:: VTEPs: {l}"
        );
        assert!(
            l.contains("[udp sum ok]"),
            "outer UDP checksum not present and valid: {l}"
        );
    }
    assert!(
        !text.contains("IP 10.0.0."),
        "IPv4 VXLAN on the underlay:\n{text}"
    );

    // `trace` resolves the container's MAC to its IPv6 VTEP, with the path MTU minus 70.
    let trace = tb
        .host(1)
        .run(OVERLAYCTL, &["trace", tb.container(3).mac(), "--json"]);
    let t: Value = serde_json::from_str(&trace).unwrap_or_else(|e| panic!("trace --json: {e}: {trace}"));
    assert_eq!(t["vtep"], ips[2].to_string(), "{t}");
    assert_eq!(t["path_mtu"], OVERLAY_MTU_V6, "{t}");
    // `diag` passes: MTU, peers reachable over IPv6 through overlayd's probes.
    let healthy = wait_until(Duration::from_secs(30), || {
        tb.hosts().iter().all(|h| h.exec(OVERLAYCTL, &["diag"]).is_ok())
    });
    if !healthy {
        for h in tb.hosts() {
            eprintln!("diag on {}: {:?}", h.ns(), h.exec(OVERLAYCTL, &["diag"]));
        }
        panic!("diag not passing on every host within 30 s");
    }
    for (a, b, port) in [(1, 2, 5201), (3, 1, 5202)] {
        tcp_transfer(tb.container(a), tb.container(b), port, 2, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Host 1 sent 2 MiB of TCP: the TAP's TSO superframes left as UDP GSO trains over IPv6 (some send carried
    // more than one segment).
    let (single, sends) = gso_sends(tb.host(1));
    eprintln!("host 1: {sends} UDP sends, {single} of them with one segment");
    assert!(
        sends > single,
        "no UDP GSO send over IPv6 on host 1 ({sends} sends, all single-segment)"
    );
    // The daemons sent nothing over IPv4 UDP (only the IPv6 underlay carried the overlay).
    for (h, before) in tb.hosts().iter().zip(v4_out_before) {
        assert_eq!(
            udp_mib(h, false, "OutDatagrams"),
            before,
            "IPv4 UDP datagrams sent by {}",
            h.ns()
        );
        assert_eq!(
            udp_mib(h, true, "InCsumErrors"),
            0,
            "UDPv6 checksum errors on {}",
            h.ns()
        );
        assert!(
            udp_mib(h, true, "OutDatagrams") > 0,
            "no UDPv6 datagrams sent by {}",
            h.ns()
        );
    }
    for (h, d) in tb.hosts().iter().zip(daemons.iter_mut()) {
        assert!(d.is_running(), "overlayd on {} exited:\n{}", h.ns(), d.log());
    }
}

// ---------------------------------------------------------------------------------------------------------
// b. interop with kernel VXLAN over IPv6
// ---------------------------------------------------------------------------------------------------------

#[test]
fn kernel_vxlan_interop_over_ipv6() {
    let tb = Testbed::builder().hosts(2).ipv6_underlay(true).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    // Host 2: kernel VXLAN VNI 1 on port 4789 with checksums over IPv6 (its default); it drops zero-checksum
    // datagrams (udp6zerocsumrx off), so every frame it delivers from overlayd carried a UDP checksum.
    h2.add_kernel_vxlan6(1, 4789, &[h1.underlay_ip6()]);
    let mut d = start_static(h1, &[h2.underlay_ip6()], true);
    assert_eq!(tap_mtu(h1, "ovl1"), OVERLAY_MTU_V6);

    ping_ok(tb.container(1), tb.container(2).ip(), 5);
    ping_ok(tb.container(2), tb.container(1).ip(), 5);
    tcp_transfer(tb.container(1), tb.container(2), 5301, 2, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("overlayd → kernel VXLAN: {e}"));
    tcp_transfer(tb.container(2), tb.container(1), 5302, 2, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("kernel VXLAN → overlayd: {e}"));
    for h in [h1, h2] {
        assert_eq!(
            udp_mib(h, true, "InCsumErrors"),
            0,
            "UDPv6 checksum errors on {}",
            h.ns()
        );
    }
    assert!(d.is_running(), "overlayd exited:\n{}", d.log());
}

// ---------------------------------------------------------------------------------------------------------
// c. cluster mode over IPv6
// ---------------------------------------------------------------------------------------------------------

fn alive_count(peers: &Value) -> usize {
    peers.as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|r| r.get("state").and_then(Value::as_str) == Some("alive"))
            .count()
    })
}

#[test]
fn cluster_mode_over_ipv6_underlay() {
    let tb = Testbed::builder().hosts(3).ipv6_underlay(true).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let l1 = h1.underlay_ip6().to_string();
    let d1 = start_overlayd(
        h1,
        &[
            "--init-cluster",
            "--local",
            &l1,
            "--state-dir",
            &state_dir(h1, "c"),
        ],
    );
    let tok = ctl_socket(h1, &["token"]).unwrap_or_else(|e| panic!("{e}"));
    let tok_file = tb.log_dir().join("token");
    std::fs::write(&tok_file, tok.trim()).unwrap_or_else(|e| panic!("write token file: {e}"));
    std::fs::set_permissions(&tok_file, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod token file: {e}"));
    let tok_file = tok_file.display().to_string();
    // Host 2 names its address; host 3 leaves it to the kernel's IPv6 route towards the seed.
    let l2 = h2.underlay_ip6().to_string();
    let d2 = start_overlayd(
        h2,
        &[
            "--peer",
            &l1,
            "--local",
            &l2,
            "--token-file",
            &tok_file,
            "--state-dir",
            &state_dir(h2, "c"),
        ],
    );
    let d3 = start_overlayd(
        h3,
        &[
            "--peer",
            &l1,
            "--token-file",
            &tok_file,
            "--state-dir",
            &state_dir(h3, "c"),
        ],
    );
    let mut daemons = [d1, d2, d3];

    let formed = wait_until(Duration::from_secs(30), || {
        tb.hosts().iter().all(|h| alive_count(&ctl_json(h, "peers")) == 3)
    });
    if !formed {
        for h in tb.hosts() {
            eprintln!("peers on {}: {}", h.ns(), ctl_json(h, "peers"));
        }
        panic!("the 3 nodes did not all see 3 alive members within 30 s");
    }
    // Every member's gossip and VTEP address is IPv6.
    for h in tb.hosts() {
        let peers = ctl_json(h, "peers");
        for row in peers.as_array().into_iter().flatten() {
            let addr = row.get("addr").and_then(Value::as_str).unwrap_or("");
            assert!(
                addr.starts_with("[fd00::"),
                "{}: member address {addr:?} is not IPv6: {peers}",
                h.ns()
            );
        }
        assert_eq!(tap_mtu(h, "ovl1"), OVERLAY_MTU_V6, "TAP MTU on {}", h.ns());
    }
    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                ping_ok(tb.container(a), tb.container(b).ip(), 3);
            }
        }
    }
    // Every node's FDB holds every other container's MAC from the control plane, behind its IPv6 VTEP.
    let complete = |h: &Host| {
        let fdb = ctl_json(h, "fdb");
        tb.hosts().iter().filter(|o| o.index() != h.index()).all(|o| {
            fdb.as_array().into_iter().flatten().any(|r| {
                let f = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                f("mac").eq_ignore_ascii_case(o.container().mac())
                    && f("origin") == "control"
                    && f("vtep") == o.underlay_ip6().to_string()
            })
        })
    };
    if !wait_until(Duration::from_secs(10), || tb.hosts().iter().all(complete)) {
        for h in tb.hosts() {
            eprintln!("fdb on {}: {}", h.ns(), ctl_json(h, "fdb"));
        }
        panic!("not every node has every other container's MAC with origin control behind its IPv6 VTEP");
    }
    tcp_transfer(tb.container(3), tb.container(1), 5401, 1, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    for (h, d) in tb.hosts().iter().zip(daemons.iter_mut()) {
        assert!(d.is_running(), "overlayd on {} exited:\n{}", h.ns(), d.log());
    }
}

// ---------------------------------------------------------------------------------------------------------
// d. one address family per underlay
// ---------------------------------------------------------------------------------------------------------

#[test]
fn mixed_address_families_are_refused_at_start() {
    let tb = Testbed::builder()
        .hosts(2)
        .containers(false)
        .ipv6_underlay(true)
        .build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (l6, p4) = (h1.underlay_ip6().to_string(), h2.underlay_ip().to_string());
    let (l4, p6) = (h1.underlay_ip().to_string(), h2.underlay_ip6().to_string());
    for (local, peer) in [(&l6, &p4), (&l4, &p6)] {
        let mut d = spawn_overlayd(
            h1,
            &[
                "--local",
                local,
                "--peer",
                peer,
                "--state-dir",
                &state_dir(h1, "m"),
            ],
        );
        let st = d.wait_timeout(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "`{}` still running with mixed families:\n{}",
                d.cmdline(),
                d.log()
            )
        });
        assert!(!st.success(), "`{}` exited 0:\n{}", d.cmdline(), d.log());
        let log = d.log();
        assert!(
            log.contains("one address family") && log.contains(peer.as_str()),
            "error does not name the peer and the fix:\n{log}"
        );
        assert!(
            !h1.link_exists("ovl1"),
            "a TAP was left behind by the refused start"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// e. never fragmented over IPv6
// ---------------------------------------------------------------------------------------------------------

/// RFC 7348 §4.3: the outer packet is never fragmented. IPv6 routers never fragment, but the sending host
/// would (IPv6 source fragmentation) unless the socket says otherwise: overlayd's says IPV6_PMTUDISC_DO, so a
/// datagram over the path MTU fails with EMSGSIZE, never fragmented; overlayd then re-probes the path MTU and
/// answers further oversized frames with ICMP "fragmentation needed" (`drops.too_big`, see tests/mtu.rs).
#[test]
fn oversized_datagrams_are_not_fragmented_over_ipv6() {
    let tb = Testbed::builder().hosts(2).ipv6_underlay(true).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_static(h1, &[h2.underlay_ip6()], true);
    let _d2 = start_static(h2, &[h1.underlay_ip6()], true);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    let too_big = |h: &Host| {
        ctl_json(h, "stats")["drops"]["too_big"]
            .as_u64()
            .unwrap_or_else(|| panic!("no drops.too_big in stats of {}", h.ns()))
    };
    let too_big_before = too_big(h1);
    // Host 1's underlay shrinks under a running daemon: its TAP stays at 1430, so a full-size inner packet now
    // needs a 1478-byte outer one, 78 bytes over the 1400-byte link.
    h1.run("ip", &["link", "set", "eth0", "mtu", "1400"]);

    // Capture IPv6 fragments (next header 44) arriving at host 2, for as long as the pings below take.
    let mut cap = Command::new("ip")
        .args(["netns", "exec", h2.ns(), "tcpdump", "-i", "eth0", "-n", "-l"])
        .args(["ip6", "and", "ip6[6]", "==", "44"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tcpdump: {e} (apt-get install tcpdump)"));
    wait_capture_armed(h2, &cap);
    // The packet socket can show before tcpdump has entered h2's namespace and attached its filter (the
    // check reads the namespace of a pid that `ip netns exec` is still switching): give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    // Positive control for the filter: ping6 between the hosts does fragment at the source. (Its reply, cut
    // into 1500-byte fragments by host 2, does not fit host 1's link now: only the requests matter here.)
    let to2 = h2.underlay_ip6().to_string();
    let _ = h1.exec(
        "ping",
        &[
            "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-s", "1600", &to2,
        ],
    );
    // 1380 bytes of ICMP payload: a 1408-byte inner IPv4 packet, within the containers' MTU of 1430.
    let to = c2.ip().to_string();
    let big = c1.exec(
        "ping",
        &[
            "-n", "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1380", &to,
        ],
    );
    // Small packets still pass: the overlay works, only what no longer fits is dropped.
    ping_ok(c1, c2.ip(), 2);
    let _ = cap.kill();
    let out = cap.wait_with_output().unwrap_or_else(|e| panic!("tcpdump: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("IPv6 fragments seen by host 2:\n{text}");
    assert!(
        big.is_err(),
        "oversized pings came back over a 1400-byte underlay: {big:?}"
    );
    // First fragments name their protocol: from host 1 only the control ping's (ICMP6), never UDP.
    let first: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("fd00::1 > fd00::2: frag (0|"))
        .collect();
    assert!(
        !first.is_empty(),
        "the capture missed the control ping's fragments:\n{text}"
    );
    assert!(
        first.iter().all(|l| l.contains("ICMP6")),
        "host 1 fragmented something other than the control ping (overlayd's VXLAN?):\n{text}"
    );
    // overlayd answers with ICMP "fragmentation needed" carrying 1400 - 70 = 1330 (the container's kernel then
    // refuses the next ones locally): at least one oversized frame reached it and was counted as too_big.
    let text = big
        .as_ref()
        .map_or_else(|e| format!("{}\n{}", e.stdout, e.stderr), String::clone);
    assert!(
        text.contains("mtu = 1330") || text.contains("mtu=1330"),
        "no fragmentation needed with mtu 1330 reached container 1:\n{text}"
    );
    assert!(
        too_big(h1) > too_big_before,
        "the oversized frames were not counted as too_big"
    );
}
