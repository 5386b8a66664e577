//! Issue 11 §1 end to end with REAL processes: each of two host namespaces runs its own dockerd (the
//! harness in tests/common/docker.rs) and a cluster-mode overlayd serving Docker's network and IPAM driver
//! at `--docker-plugin tcp:127.0.0.1:PORT`; one `.spec` file (unique plugin name per test) names that port,
//! so each dockerd reaches its own overlayd on its own loopback. `docker network create` on both hosts (the
//! second one without `--subnet`, naming the network with `--ipam-opt network=app`), 10 busybox containers
//! per host with unique addresses, cross-host ping, a TCP transfer (busybox httpd → wget across hosts), and
//! `docker rm -f` + `docker network rm` leave no veth and no bridge port behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::docker::{bridge_ports, Dockerd, PluginSpec, BUSYBOX_IMAGE};
use common::overlay::{form_cluster, rows, start_overlayd, state_dir, str_field, OVERLAYCTL};
use common::testbed::{wait_until, Host, Netns, Testbed};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// The plugin port on every host's own loopback.
const PLUGIN_PORT: u16 = 9476;
const PER_HOST: usize = 10;

/// The network `name` as `overlayctl network ls --json` on `host` shows it.
fn listed(host: &Host, name: &str) -> Option<Value> {
    let out = host.exec(OVERLAYCTL, &["network", "ls", "--json"]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    rows(&v).iter().find(|n| str_field(n, "name") == name).cloned()
}

/// Host ends of veths in `host`'s namespace whose name starts with `ovh` (the driver's).
fn driver_veths(host: &Host) -> Vec<String> {
    host.run("ip", &["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with("ovh") || n.starts_with("ovc"))
        .collect()
}

/// Ports of `bridge` other than the network's own TAP.
fn container_ports(host: &Host, bridge: &str, tap: &str) -> Vec<String> {
    let mut ports = bridge_ports(host, bridge);
    ports.retain(|n| n != tap);
    ports
}

#[test]
fn two_dockerds_with_their_overlayds_run_containers_that_talk_across_hosts() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    tb.cleanup_on_exit();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    for h in &hosts {
        h.run("ip", &["link", "set", "lo", "up"]);
    }
    let plugin_addr = format!("tcp:127.0.0.1:{PLUGIN_PORT}");
    let _daemons = form_cluster(&tb, &hosts, "c", &|_| {
        vec!["--docker-plugin".to_string(), plugin_addr.clone()]
    });
    let plugin = format!("ovd{}", tb.id());
    let _spec = PluginSpec::write(&plugin, &format!("tcp://127.0.0.1:{PLUGIN_PORT}"));
    let docks: Vec<Dockerd> = std::thread::scope(|s| {
        let hs: Vec<_> = hosts
            .iter()
            .map(|h| {
                s.spawn(move || {
                    let d = Dockerd::start(*h);
                    d.import_busybox();
                    d
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (d1, d2) = (&docks[0], &docks[1]);

    // Host 1 creates the cluster network; host 2 waits until it has spread, then joins it without --subnet.
    d1.network_create(&plugin, &["--subnet", "10.20.0.0/16", "-o", "network=app", "app"]);
    assert!(
        wait_until(Duration::from_secs(10), || listed(hosts[1], "app").is_some()),
        "network app did not reach host 2 within 10 s"
    );
    let net = listed(hosts[1], "app").unwrap();
    assert_eq!(str_field(&net, "subnet"), "10.20.0.0/16", "{net}");
    let bridge = str_field(&net, "bridge").to_string();
    let tap = str_field(&net, "tap").to_string();
    // A different subnet for the same cluster network is an error on host 2.
    let e = d2
        .try_network_create(
            &plugin,
            &[
                "--subnet",
                "10.30.0.0/16",
                "--ipam-opt",
                "network=app",
                "-o",
                "network=app",
                "wrong",
            ],
        )
        .unwrap_err();
    assert!(e.stderr.contains("has subnet 10.20.0.0/16"), "{e}");
    d2.network_create(
        &plugin,
        &["--ipam-opt", "network=app", "-o", "network=app", "app"],
    );

    // 10 containers per host, all addresses unique and inside the subnet.
    let (ids1, ids2) = std::thread::scope(|s| {
        let a = s.spawn(|| d1.run_many("app", PER_HOST));
        let b = s.spawn(|| d2.run_many("app", PER_HOST));
        (a.join().unwrap(), b.join().unwrap())
    });
    let ips1: Vec<String> = ids1.iter().map(|id| d1.container_ip(id)).collect();
    let ips2: Vec<String> = ids2.iter().map(|id| d2.container_ip(id)).collect();
    println!("host 1: {ips1:?}\nhost 2: {ips2:?}");
    let all: BTreeSet<&String> = ips1.iter().chain(&ips2).collect();
    assert_eq!(all.len(), 2 * PER_HOST, "addresses not unique: {ips1:?} {ips2:?}");
    let subnet: ipnet::Ipv4Net = "10.20.0.0/16".parse().unwrap();
    for ip in &all {
        let a: std::net::Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("{ip:?}: {e}"));
        assert!(subnet.contains(&a), "{a} outside {subnet}");
    }
    // eth0: the subnet's prefix, the network's MTU, the MAC Docker reports for the endpoint.
    let mtu = net["mtu"].as_u64().unwrap_or_else(|| panic!("no mtu: {net}"));
    let link = d1.exec(&ids1[0], &["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains(&format!("mtu {mtu} ")),
        "{link} should have mtu {mtu}"
    );
    let mac = d1.must(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
        &ids1[0],
    ]);
    assert!(link.contains(mac.trim()), "{link} should have {}", mac.trim());
    let addrs = d1.exec(&ids1[0], &["ip", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(addrs.contains(&format!("{}/16", ips1[0])), "{addrs}");
    assert_eq!(driver_veths(hosts[0]).len(), PER_HOST);
    assert_eq!(driver_veths(hosts[1]).len(), PER_HOST);
    for h in &hosts {
        assert_eq!(
            container_ports(h, &bridge, &tap).len(),
            PER_HOST,
            "host {}",
            h.index()
        );
    }

    // Cross-host ping: container i on host 1 ↔ container i on host 2.
    std::thread::scope(|s| {
        for i in 0..PER_HOST {
            let (a, b, ipa, ipb) = (&ids1[i], &ids2[i], &ips1[i], &ips2[i]);
            s.spawn(move || {
                let ok = wait_until(Duration::from_secs(15), || {
                    d1.exec(a, &["ping", "-c", "1", "-W", "1", ipb]).is_ok()
                });
                assert!(ok, "{ipa} (host 1) cannot ping {ipb} (host 2)");
                d2.exec(b, &["ping", "-c", "3", "-W", "2", ipa])
                    .unwrap_or_else(|e| panic!("{ipb} (host 2) → {ipa} (host 1): {e}"));
            });
        }
    });

    // TCP: busybox httpd in a container on host 1, wget from a container on host 2.
    let web = d1.run_detached(&[
        "--network",
        "app",
        BUSYBOX_IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/var/www",
    ]);
    let web_ip = d1.container_ip(&web);
    d1.exec(&web, &["sh", "-c", "seq 1 40000 > /var/www/data"])
        .unwrap_or_else(|e| panic!("{e}"));
    let expected: String = (1..=40000).map(|n| format!("{n}\n")).collect();
    let url = format!("http://{web_ip}:8080/data");
    let mut got = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        match d2.exec(&ids2[0], &["wget", "-q", "-O", "-", &url]) {
            Ok(body) => {
                got = body;
                true
            }
            Err(_) => false,
        }
    });
    assert!(ok, "wget {url} from host 2 failed");
    assert_eq!(got.len(), expected.len(), "transfer truncated");
    assert!(got == expected, "transfer corrupted");

    // The documented usage: the very same command on every host, right after each other (the second may
    // run before the definition has spread: an identical definition is accepted).
    let web_args = ["--subnet", "10.21.0.0/16", "-o", "network=web", "web"];
    d1.network_create(&plugin, &web_args);
    d2.network_create(&plugin, &web_args);
    let w1 = d1.run_detached(&["--network", "web", BUSYBOX_IMAGE, "sleep", "600"]);
    let w2 = d2.run_detached(&["--network", "web", BUSYBOX_IMAGE, "sleep", "600"]);
    let (wip1, wip2) = (d1.container_ip(&w1), d2.container_ip(&w2));
    assert!(
        wip1.starts_with("10.21.") && wip2.starts_with("10.21.") && wip1 != wip2,
        "{wip1} {wip2}"
    );
    assert!(
        wait_until(Duration::from_secs(15), || d1
            .exec(&w1, &["ping", "-c", "1", "-W", "1", &wip2])
            .is_ok()),
        "{wip1} (host 1, web) cannot ping {wip2} (host 2, web)"
    );
    d1.rm(&w1);
    d2.rm(&w2);
    for d in [d1, d2] {
        d.must(&["network", "rm", "web"]);
    }

    // docker rm -f and docker network rm leave no veth and no bridge port behind.
    std::thread::scope(|s| {
        s.spawn(|| {
            for id in ids1.iter().chain([&web]) {
                d1.rm(id);
            }
        });
        s.spawn(|| {
            for id in &ids2 {
                d2.rm(id);
            }
        });
    });
    for d in [d1, d2] {
        d.must(&["network", "rm", "app"]);
    }
    for h in &hosts {
        assert!(
            driver_veths(h).is_empty(),
            "veths left on host {}: {:?}",
            h.index(),
            driver_veths(h)
        );
        let ports = container_ports(h, &bridge, &tap);
        assert!(
            ports.is_empty(),
            "ports left on {bridge} of host {}: {ports:?}",
            h.index()
        );
    }
    // The addresses went back: this host's allocator has no reservation left.
    for (i, h) in hosts.iter().enumerate() {
        let f = std::path::Path::new(&state_dir(&tb, h, "c")).join("ipam-reservations.json");
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(rows(&v).is_empty(), "host {}: reservations left: {text}", i + 1);
    }
    drop(docks);
}

/// `--docker-plugin unix:PATH`: the daemon serves the plugin API on a root-only socket and removes the
/// socket when it exits.
#[test]
fn docker_plugin_unix_socket_is_served_and_removed_on_exit() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let tb = Testbed::builder().hosts(2).containers(false).build();
    tb.cleanup_on_exit();
    let h = tb.host(1);
    let sock = tb.log_dir().join("overlayd-plugin.sock");
    let arg = format!("unix:{}", sock.display());
    let peer = tb.host(2).underlay_ip().to_string();
    let mut d = start_overlayd(h, &["--peer", &peer, "--docker-plugin", &arg]);
    assert!(sock.exists(), "{} not created:\n{}", sock.display(), d.log());
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the plugin socket must be root-only");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(
        b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#"{"Implements":["NetworkDriver","IpamDriver"]}"#),
        "{answer}"
    );
    d.signal("TERM").unwrap();
    assert!(
        d.wait_timeout(Duration::from_secs(20)).is_some(),
        "overlayd did not exit:\n{}",
        d.log()
    );
    assert!(!sock.exists(), "{} left behind after exit", sock.display());
}
