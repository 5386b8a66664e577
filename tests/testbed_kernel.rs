//! Proves the netns testbed itself, with kernel VXLAN on both hosts and no overlayd: if this fails, the
//! machine or the harness is broken, not the daemon.

mod common;

use common::garbage::{self, GARBAGE_COUNT};
use common::testbed::{tcp_transfer, wait_until, BridgeMode, Netns, Testbed};
use std::time::Duration;

#[test]
fn kernel_vxlan_two_hosts_ping_and_tcp() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    h1.add_kernel_vxlan(7, 4789, &[h2.underlay_ip()]);
    h2.add_kernel_vxlan(7, 4789, &[h1.underlay_ip()]);
    let (c1, c2) = (tb.container(1), tb.container(2));

    // Underlay first: a failure here is the testbed's wiring, not VXLAN.
    let p = h1
        .ping(h2.underlay_ip(), 2)
        .unwrap_or_else(|e| panic!("underlay ping h1 → h2: {e}"));
    assert_eq!(
        p.received, p.transmitted,
        "underlay ping h1 → h2 lost packets: {p:?}"
    );

    assert!(
        wait_until(Duration::from_secs(10), || c1.ping(c2.ip(), 1).is_ok()),
        "container 1 → container 2 over kernel VXLAN: no ping reply within 10 s"
    );
    let p = c1.ping(c2.ip(), 5).unwrap_or_else(|e| panic!("c1 → c2: {e}"));
    assert_eq!(p.received, 5, "c1 → c2 lost packets: {p:?}");
    let p = c2.ping(c1.ip(), 5).unwrap_or_else(|e| panic!("c2 → c1: {e}"));
    assert_eq!(p.received, 5, "c2 → c1 lost packets: {p:?}");

    tcp_transfer(c1, c2, 5001, 4, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    tcp_transfer(c2, c1, 5002, 4, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));

    // The kernel learned container 2's MAC behind host 2's VTEP: the overlay really carried the traffic.
    let fdb = h1.run("bridge", &["fdb", "show", "dev", "vx7"]);
    let want = format!("{} dst {}", c2.mac(), h2.underlay_ip());
    assert!(
        fdb.lines().any(|l| l.starts_with(&want)),
        "expected `{want}` in host 1's vx7 FDB:\n{fdb}"
    );
}

#[test]
fn testbed_names_are_unique_and_cleaned_up() {
    let names: Vec<String>;
    let mut orphan;
    {
        let a = Testbed::builder().hosts(1).containers(false).build();
        let b = Testbed::builder().hosts(1).containers(false).build();
        assert_ne!(a.id(), b.id());
        names = vec![
            a.underlay().ns().to_string(),
            a.host(1).ns().to_string(),
            b.host(1).ns().to_string(),
        ];
        for n in &names {
            assert!(n.len() <= 15, "namespace name {n} longer than 15 characters");
        }
        // A process left running inside must not keep the namespace alive.
        let _sleeper = a.host(1).spawn("sleep", &["300"]);
        orphan = std::process::Command::new("ip")
            .args(["netns", "exec", a.host(1).ns(), "sleep", "300"])
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sleep: {e}"));
    }
    // Killed by the testbed's cleanup (`ip netns pids` + SIGKILL), not by us.
    let st = orphan.try_wait().unwrap_or_else(|e| panic!("try_wait: {e}"));
    assert!(
        st.is_some(),
        "a process inside a deleted testbed namespace is still running"
    );
    let list = common::testbed::run_cmd(std::process::Command::new("ip").args(["netns", "list"]))
        .unwrap_or_else(|e| panic!("{e}"));
    for n in &names {
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "namespace {n} left behind"
        );
    }
}

#[test]
fn garbage_generator_has_all_kinds_and_lengths() {
    let g = garbage::datagrams(1);
    assert_eq!(g.len() as u64, GARBAGE_COUNT);
    assert!(g.iter().all(|d| d.len() < 200), "lengths must be 0..200");
    assert!(g.iter().any(Vec::is_empty), "no empty datagram");
    assert!(
        g.iter()
            .any(|d| d.len() >= 8 && d[0] == 0x08 && d[4..7] != [0, 0, 1]),
        "no wrong-VNI datagram"
    );
    assert!(
        g.iter().any(|d| d.len() < 22 && d.len() >= 8 && d[0] == 0x08),
        "no truncated datagram"
    );
    // No datagram is a valid VXLAN frame for VNI 1 with a unicast, non-zero source MAC.
    for d in &g {
        let valid_hdr = d.len() >= 22 && d[0] & 0x08 != 0 && d[4..7] == [0, 0, 1];
        assert!(
            !valid_hdr || d[14] & 1 == 1 || d[14..20] == [0; 6],
            "deliverable garbage: {d:02x?}"
        );
    }
}

/// The reference behaviour for the overlayd garbage test: kernel VXLAN drops all of it, so container 1 sees
/// nothing (validates the generator and the noise tolerance), and the overlay still works afterwards.
/// Also exercises `BridgeMode::Daemon` + `Host::add_bridge`.
#[test]
fn kernel_vxlan_ignores_garbage() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    for (h, peer) in [(h1, h2), (h2, h1)] {
        h.add_bridge();
        h.add_kernel_vxlan(1, 4789, &[peer.underlay_ip()]);
    }
    let (c1, c2) = (tb.container(1), tb.container(2));
    assert!(
        wait_until(Duration::from_secs(10), || c1.ping(c2.ip(), 1).is_ok()),
        "c1 → c2: no reply in 10 s"
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = c1.link_stat("eth0", "rx_packets");
    let vx_before = h1.link_stat("vx1", "rx_packets");
    garbage::send_from(h2, h1.underlay_ip(), 4789, 1);
    std::thread::sleep(Duration::from_millis(500));
    let got = c1.link_stat("eth0", "rx_packets") - before;
    let vx_got = h1.link_stat("vx1", "rx_packets") - vx_before;
    assert!(
        got <= 3,
        "container 1 received {got} packets during the garbage burst (kernel vx1 rx +{vx_got})"
    );
    let p = c1
        .ping(c2.ip(), 3)
        .unwrap_or_else(|e| panic!("c1 → c2 after garbage: {e}"));
    assert_eq!(p.received, 3, "c1 → c2 after garbage: {p:?}");
    eprintln!("kernel VXLAN: container 1 rx +{got}, vx1 rx_packets +{vx_got} during {GARBAGE_COUNT} garbage datagrams");
}

/// Helper, not a test: sends the garbage when re-executed by `garbage::send_from` inside a host namespace.
#[test]
fn garbage_sender() {
    garbage::sender_main();
}
