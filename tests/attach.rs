//! Issue 10 §3, end to end: `overlayctl attach/detach/attachments` against real overlayd processes in static
//! mode (`--network app:100:10.40.0.0/16`, so attach needs `--ip`). Fresh namespaces are wired by the
//! daemon (veth, MTU, address, bridge port) and ping across hosts; detach leaves no veth, address or bridge
//! port and is idempotent; a namespace is also attached by PID; attachments survive a daemon restart; and
//! attached containers talk ping and TCP over an IPv6 underlay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_socket, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{wait_until, BridgeMode, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A namespace created by the test (`ip netns add`), deleted on drop.
struct Ns {
    name: String,
    log_dir: PathBuf,
}

impl Ns {
    fn new(tb: &Testbed, tag: &str) -> Ns {
        let name = format!("ovt{}{tag}", tb.id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (apt-get install iproute2)");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let ns = Ns {
            name,
            log_dir: tb.log_dir().to_owned(),
        };
        ns.run("ip", &["link", "set", "lo", "up"]);
        ns
    }
}

impl Netns for Ns {
    fn ns(&self) -> &str {
        &self.name
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn start(host: &Host, local: &str, peers: &[String], extra: &[&str]) -> Daemon {
    let mut args: Vec<&str> = vec!["--local", local, "--network", "app:100:10.40.0.0/16"];
    for p in peers {
        args.extend(["--peer", p.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut d = spawn_overlayd(host, &args);
    let ready = wait_until(Duration::from_secs(15), || {
        !d.is_running() || ctl_socket(host, &["attachments", "--json"]).is_ok()
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 15 s:\n{}", d.cmdline(), d.log());
    d
}

fn attach(host: &Host, netns: &str, ip: &str) -> Value {
    let out = ctl_socket(
        host,
        &[
            "attach",
            "--netns",
            netns,
            "--network",
            "app",
            "--ip",
            ip,
            "--json",
        ],
    )
    .unwrap_or_else(|e| panic!("attach {netns} {ip} on {}: {e}", host.ns()));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("attach answer is not JSON ({e}): {out}"))
}

fn attachments(host: &Host) -> Vec<Value> {
    let out = ctl_socket(host, &["attachments", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("attachments is not JSON ({e}): {out}"))
}

fn bridge_ports(host: &Host, bridge: &str) -> String {
    host.run("ip", &["-o", "link", "show", "master", bridge])
}

#[test]
fn static_attach_pings_across_hosts_and_detach_leaves_nothing() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let ip = |h: &Host| h.underlay_ip().to_string();
    let _d1 = start(h1, &ip(h1), &[ip(h2)], &[]);
    let _d2 = start(h2, &ip(h2), &[ip(h1)], &[]);
    let (c1, c2) = (Ns::new(&tb, "a1"), Ns::new(&tb, "a2"));

    // Static mode: no --ip, no address.
    let err = ctl_socket(h1, &["attach", "--netns", c1.ns(), "--network", "app"])
        .expect_err("attach without --ip in static mode must fail");
    assert!(
        err.to_string().contains("--ip"),
        "error does not name --ip: {err}"
    );
    // Outside the subnet: refused.
    let err = ctl_socket(
        h1,
        &[
            "attach",
            "--netns",
            c1.ns(),
            "--network",
            "app",
            "--ip",
            "10.41.0.10/16",
        ],
    )
    .expect_err("an address outside the subnet must be refused");
    assert!(err.to_string().contains("outside"), "{err}");
    // Unknown network: refused, naming the served ones.
    let err = ctl_socket(
        h1,
        &[
            "attach",
            "--netns",
            c1.ns(),
            "--network",
            "nope",
            "--ip",
            "10.40.0.10/16",
        ],
    )
    .expect_err("an unknown network must be refused");
    assert!(err.to_string().contains("app"), "{err}");

    let a1 = attach(h1, c1.ns(), "10.40.0.10/16");
    let a2 = attach(h2, c2.ns(), "10.40.0.20/16");
    println!("attached: {a1}\n{a2}");
    assert_eq!(a1["ip"], "10.40.0.10/16");
    assert_eq!(a1["network"], "app");
    assert_eq!(a1["ifname"], "eth0");
    assert!(a1["mtu"].as_u64().is_some_and(|m| m > 1000), "{a1}");
    let host_if = a1["host_ifname"].as_str().expect("host_ifname").to_string();
    assert!(bridge_ports(h1, "ovbr100").contains(&host_if));
    let addrs = c1.run("ip", &["-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("10.40.0.10/16"), "{addrs}");
    // The same address twice on one host: conflict.
    let c3 = Ns::new(&tb, "a3");
    let err = ctl_socket(
        h1,
        &[
            "attach",
            "--netns",
            c3.ns(),
            "--network",
            "app",
            "--ip",
            "10.40.0.10/16",
        ],
    )
    .expect_err("an address in use must be refused");
    assert!(err.to_string().contains("already used"), "{err}");

    ping_ok(&c1, Ipv4Addr::new(10, 40, 0, 20), 3);
    ping_ok(&c2, Ipv4Addr::new(10, 40, 0, 10), 3);
    let list = attachments(h1);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["netns"], c1.ns());
    let table = ctl_socket(h1, &["attachments"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(table.contains("10.40.0.10/16"), "{table}");

    // Detach: no veth, no address, no bridge port; again: still fine.
    let out = ctl_socket(h1, &["detach", "--netns", c1.ns(), "--network", "app"]).unwrap();
    assert!(out.contains("detached"), "{out}");
    assert!(!h1.link_exists(&host_if), "host veth {host_if} left behind");
    assert!(!c1.link_exists("eth0"), "eth0 left in the namespace");
    let addrs = c1.run("ip", &["-o", "addr"]);
    assert!(!addrs.contains("10.40."), "address left: {addrs}");
    assert!(!bridge_ports(h1, "ovbr100").contains(&host_if));
    assert!(attachments(h1).is_empty());
    let out = ctl_socket(h1, &["detach", "--netns", c1.ns(), "--network", "app"]).unwrap();
    assert!(out.contains("nothing was attached"), "{out}");
    let v: Value = serde_json::from_str(&h1.run(
        "curl",
        &[
            "-s",
            "--unix-socket",
            &h1.admin_socket().to_string_lossy(),
            "-d",
            &format!(r#"{{"netns":"{}","network":"app"}}"#, c1.ns()),
            "http://localhost/v1/detach",
        ],
    ))
    .expect("detach answer is JSON");
    assert_eq!(v, serde_json::json!({"detached": false}));

    // By PID: a `sleep` in a fresh network namespace.
    let mut sleeper = h1.spawn("unshare", &["-n", "sleep", "120"]);
    let pid = sleeper.pid().to_string();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != std::fs::read_link("/proc/self/ns/net").ok()
            && Command::new("nsenter")
                .args(["-t", &pid, "-n", "true"])
                .status()
                .is_ok_and(|s| s.success())
    }));
    let a = attach(h1, &pid, "10.40.0.30/16");
    assert_eq!(a["netns"], pid.as_str());
    ping_ok(&c2, Ipv4Addr::new(10, 40, 0, 30), 3);
    let out = ctl_socket(h1, &["detach", "--netns", &pid, "--network", "app"]).unwrap();
    assert!(out.contains("detached"), "{out}");
    assert!(
        c2.ping(Ipv4Addr::new(10, 40, 0, 30), 2).is_err(),
        "still reachable after detach"
    );
    sleeper.kill();
}

#[test]
fn attachments_survive_a_daemon_restart() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let ip = |h: &Host| h.underlay_ip().to_string();
    let mut d1 = start(h1, &ip(h1), &[ip(h2)], &[]);
    let _d2 = start(h2, &ip(h2), &[ip(h1)], &[]);
    let (c1, c2) = (Ns::new(&tb, "r1"), Ns::new(&tb, "r2"));
    let a1 = attach(h1, c1.ns(), "10.40.1.10/16");
    attach(h2, c2.ns(), "10.40.1.20/16");
    ping_ok(&c2, Ipv4Addr::new(10, 40, 1, 10), 2);

    d1.signal("TERM").unwrap();
    let st = d1.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some(), "overlayd did not exit on SIGTERM:\n{}", d1.log());
    let _d1 = start(h1, &ip(h1), &[ip(h2)], &[]);
    let list = attachments(h1);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["host_ifname"], a1["host_ifname"]);
    assert_eq!(list[0]["ip"], "10.40.1.10/16");
    ping_ok(&c2, Ipv4Addr::new(10, 40, 1, 10), 3);
    ping_ok(&c1, Ipv4Addr::new(10, 40, 1, 20), 3);
}

#[test]
fn attached_containers_ping_and_talk_tcp_over_an_ipv6_underlay() {
    let tb = Testbed::builder()
        .hosts(2)
        .bridge(BridgeMode::Daemon)
        .ipv6_underlay(true)
        .build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let ip = |h: &Host| h.underlay_ip6().to_string();
    let _d1 = start(h1, &ip(h1), &[ip(h2)], &[]);
    let _d2 = start(h2, &ip(h2), &[ip(h1)], &[]);
    let (c1, c2) = (Ns::new(&tb, "v1"), Ns::new(&tb, "v2"));
    let a1 = attach(h1, c1.ns(), "10.40.2.10/16");
    attach(h2, c2.ns(), "10.40.2.20/16");
    // IPv6 underlay: 70 bytes of overhead below the underlay MTU.
    let underlay_mtu: u64 = h1
        .run("cat", &["/sys/class/net/eth0/mtu"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(a1["mtu"].as_u64(), Some(underlay_mtu - 70), "{a1}");
    ping_ok(&c1, Ipv4Addr::new(10, 40, 2, 20), 3);

    // TCP: socat listener in c2, a client in c1 sends a line; the listener writes what it got.
    let out = tb.log_dir().join(format!("ovt{}-tcp6.out", tb.id()));
    let out_s = out.to_string_lossy().to_string();
    let mut server = c2.spawn(
        "socat",
        &["-u", "TCP-LISTEN:7001,reuseaddr", &format!("CREATE:{out_s}")],
    );
    let sent = wait_until(Duration::from_secs(10), || {
        c1.exec(
            "sh",
            &[
                "-c",
                "echo overlay-over-ipv6 | socat -u - TCP:10.40.2.20:7001,connect-timeout=2",
            ],
        )
        .is_ok()
    });
    assert!(
        sent,
        "no TCP connection to 10.40.2.20:7001 (socat: apt-get install socat)\n{}",
        server.log()
    );
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(
        &out
    )
    .is_ok_and(|s| s.contains("overlay-over-ipv6"))));
    server.kill();
    let _ = OVERLAYCTL;
}
