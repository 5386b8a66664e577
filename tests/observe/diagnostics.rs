//! `overlayctl diag`: passes on a healthy testbed, names the peer and port when an nftables rule drops
//! UDP 4789 on one host, and the interface when a container's veth has the wrong MTU.

use super::{diag, start_static};
use crate::common::overlay::{ping_ok, OVERLAYCTL};
use crate::common::testbed::{wait_until, Host, Netns, Testbed};
use serde_json::Value;
use std::time::Duration;

/// nftables in the host's own namespace: drop UDP to `port` arriving there.
fn nft_drop_udp(host: &Host, port: u16) {
    let port = port.to_string();
    let steps: [&[&str]; 3] = [
        &["add", "table", "inet", "ovtest"],
        &[
            "add",
            "chain",
            "inet",
            "ovtest",
            "input",
            "{ type filter hook input priority 0; }",
        ],
        &[
            "add", "rule", "inet", "ovtest", "input", "udp", "dport", &port, "drop",
        ],
    ];
    for args in steps {
        if let Err(e) = host.exec("nft", args) {
            panic!("nft (apt-get install nftables) failed: {e}");
        }
    }
}

#[test]
fn diag_finds_a_firewalled_vxlan_port_and_a_wrong_veth_mtu() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_static(h1, &[h2.underlay_ip()]);
    let _d2 = start_static(h2, &[h1.underlay_ip()]);
    ping_ok(h1.container(), h2.container().ip(), 2);

    // Healthy: every check passes and the exit status is 0 (both peers have probed each other by now).
    let healthy = wait_until(Duration::from_secs(30), || diag(h1).is_ok() && diag(h2).is_ok());
    let out = diag(h1).unwrap_or_else(|e| panic!("diag on a healthy testbed failed: {e}"));
    assert!(healthy);
    eprintln!("diag on a healthy testbed:\n{out}");
    for check in [
        "bridge ovl0",
        "tap ovl1",
        "mtu",
        "offloads eth0",
        &format!("peer {} udp/4789", h2.underlay_ip()),
        "pmtu",
        "clock",
        "activity",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("✓ {check}"))),
            "no passing {check}:\n{out}"
        );
    }
    assert!(!out.contains('✗'), "{out}");
    let json: Value = serde_json::from_str(&h1.run(OVERLAYCTL, &["diag", "--json"])).unwrap();
    assert_eq!(json["ok"], true, "{json}");

    // UDP 4789 dropped on host 2 (its namespace only): diag on host 1 fails and names host 2 and the port.
    nft_drop_udp(h2, 4789);
    let e = diag(h1).expect_err("diag passed with UDP 4789 dropped on host 2");
    eprintln!("diag with UDP 4789 dropped on host 2:\n{}", e.stdout);
    assert_eq!(e.status.and_then(|s| s.code()), Some(1), "{e}");
    let line = e
        .stdout
        .lines()
        .find(|l| l.starts_with('✗'))
        .unwrap_or_else(|| panic!("no failed check:\n{}", e.stdout));
    assert!(
        line.contains(&h2.underlay_ip().to_string()) && line.contains("4789"),
        "{}",
        e.stdout
    );
    assert!(e.stdout.contains("fix: allow UDP 4789"), "{}", e.stdout);
    let json = h1
        .exec(OVERLAYCTL, &["diag", "--json"])
        .expect_err("diag --json passed");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    // Host 2 itself hears nothing on its VXLAN port from host 1 any more: within 30 s host 1 turns `silent`
    // there, and host 2's diag names it.
    let silent = wait_until(Duration::from_secs(60), || {
        diag(h2).is_err_and(|e| {
            e.stdout
                .lines()
                .any(|l| l.starts_with(&format!("✗ activity {}: silent", h1.underlay_ip())))
        })
    });
    let out2 = diag(h2).unwrap_or_else(|e| e.stdout);
    eprintln!("diag on host 2 with its UDP 4789 dropped:\n{out2}");
    assert!(silent, "{out2}");
    h2.run("nft", &["delete", "table", "inet", "ovtest"]);
    assert!(
        wait_until(Duration::from_secs(30), || diag(h1).is_ok()),
        "diag still failing after the rule went"
    );

    // A container's veth (its host side, a port of ovl0) with the wrong MTU: named, with the fix.
    h1.run("ip", &["link", "set", "vc1", "mtu", "1400"]);
    let e = diag(h1).expect_err("diag passed with vc1 at MTU 1400");
    eprintln!("diag with vc1 at MTU 1400:\n{}", e.stdout);
    assert!(
        e.stdout
            .lines()
            .any(|l| l.starts_with("✗ mtu vc1") && l.contains("1400") && l.contains("1450")),
        "{}",
        e.stdout
    );
    assert!(e.stdout.contains("ip link set vc1 mtu 1450"), "{}", e.stdout);
}
