//! Issue 10 §2–§3 in cluster mode, end to end: `overlayctl network create` on one member, then
//! `overlayctl attach` WITHOUT `--ip` on every host: addresses come from per-host blocks the control plane
//! granted (no two hosts share a block, no address collides), attached namespaces ping across hosts, and
//! detach leaves no veth behind. Scale: a /16 with 3 hosts and more than 100 attached namespaces, one host
//! holding more than one /26 block.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_socket, form_cluster, rows, spawn_overlayd, state_dir, str_field, OVERLAYCTL};
use common::testbed::{wait_until, BridgeMode, Host, Netns, Testbed};
use ipnet::Ipv4Net;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Namespaces created by the test (`ip netns add`), deleted on drop.
struct Nss {
    names: Vec<String>,
    log_dir: PathBuf,
}

struct NsRef<'a>(&'a str, &'a Path);

impl Netns for NsRef<'_> {
    fn ns(&self) -> &str {
        self.0
    }
    fn log_dir(&self) -> &Path {
        self.1
    }
}

impl Nss {
    fn new(tb: &Testbed) -> Nss {
        Nss {
            names: Vec::new(),
            log_dir: tb.log_dir().to_owned(),
        }
    }

    fn add(&mut self, name: String) -> String {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (apt-get install iproute2)");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        self.names.push(name.clone());
        name
    }

    fn get<'a>(&'a self, name: &'a str) -> NsRef<'a> {
        NsRef(name, &self.log_dir)
    }
}

impl Drop for Nss {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// `network create app --vni 100 --subnet SUBNET` on host 1; waits for its bridge on every host.
fn create_network(hosts: &[&Host], subnet: &str) {
    ctl_socket(
        hosts[0],
        &["network", "create", "app", "--vni", "100", "--subnet", subnet],
    )
    .unwrap_or_else(|e| panic!("network create: {e}"));
    assert!(
        wait_until(Duration::from_secs(5), || hosts
            .iter()
            .all(|h| h.link_exists("ovbr100"))),
        "network app did not appear on every host within 5 s"
    );
}

fn attach_no_ip(host: &Host, netns: &str) -> Ipv4Net {
    let out = ctl_socket(host, &["attach", "--netns", netns, "--network", "app", "--json"])
        .unwrap_or_else(|e| panic!("attach {netns} on {}: {e}", host.ns()));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let ip = v["ip"].as_str().unwrap_or_else(|| panic!("no ip: {v}"));
    ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"))
}

fn block_of(ip: Ipv4Net, prefix: u8) -> Ipv4Net {
    Ipv4Net::new(ip.addr(), prefix).unwrap().trunc()
}

/// Attach `counts[i]` fresh namespaces on host i+1 (no --ip); returns (host index, ns, address).
fn attach_many(
    tb: &Testbed,
    nss: &mut Nss,
    hosts: &[&Host],
    counts: &[usize],
) -> Vec<(usize, String, Ipv4Net)> {
    let mut out = Vec::new();
    for (i, (h, &n)) in hosts.iter().zip(counts).enumerate() {
        for k in 0..n {
            let ns = nss.add(format!("ovt{}n{}x{k}", tb.id(), i + 1));
            let ip = attach_no_ip(h, &ns);
            out.push((i, ns, ip));
        }
    }
    out
}

/// Every address distinct, inside the subnet with its prefix; no block on two hosts.
fn check_distinct(
    att: &[(usize, String, Ipv4Net)],
    subnet: Ipv4Net,
    prefix: u8,
) -> BTreeMap<usize, BTreeSet<Ipv4Net>> {
    let mut seen = BTreeSet::new();
    let mut blocks: BTreeMap<usize, BTreeSet<Ipv4Net>> = BTreeMap::new();
    for (h, ns, ip) in att {
        assert!(seen.insert(ip.addr()), "address {ip} of {ns} handed out twice");
        assert!(subnet.contains(&ip.addr()), "{ip} outside {subnet}");
        assert_eq!(
            ip.prefix_len(),
            subnet.prefix_len(),
            "{ip}: not the subnet's prefix"
        );
        blocks.entry(*h).or_default().insert(block_of(*ip, prefix));
    }
    for (a, ba) in &blocks {
        for (b, bb) in &blocks {
            if a < b {
                assert!(
                    ba.is_disjoint(bb),
                    "hosts {a} and {b} share a block: {ba:?} {bb:?}"
                );
            }
        }
    }
    blocks
}

fn detach_all(hosts: &[&Host], att: &[(usize, String, Ipv4Net)]) {
    for (h, ns, _) in att {
        let out = ctl_socket(hosts[*h], &["detach", "--netns", ns, "--network", "app"])
            .unwrap_or_else(|e| panic!("detach {ns}: {e}"));
        assert!(out.contains("detached"), "{out}");
    }
    for h in hosts {
        let links = h.run("ip", &["-o", "link", "show"]);
        assert!(!links.contains(": ovv"), "veths left on {}: {links}", h.ns());
        let ports = h.run("ip", &["-o", "link", "show", "master", "ovbr100"]);
        assert!(!ports.contains("ovv"), "bridge ports left on {}: {ports}", h.ns());
        let list = ctl_socket(h, &["attachments", "--json"]).unwrap();
        assert_eq!(list.trim(), "[]", "attachments left on {}", h.ns());
    }
}

#[test]

fn cluster_attach_without_ip_gets_distinct_blocks_and_pings() {
    let tb = Testbed::builder().hosts(3).bridge(BridgeMode::Daemon).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let _daemons = form_cluster(&tb, &hosts, "c", &|_| Vec::new());
    create_network(&hosts, "10.60.0.0/16");
    let mut nss = Nss::new(&tb);
    let att = attach_many(&tb, &mut nss, &hosts, &[1, 1, 1]);
    println!("attached: {att:?}");
    let blocks = check_distinct(&att, "10.60.0.0/16".parse().unwrap(), 26);
    assert_eq!(blocks.len(), 3);
    for (i, ns, _) in &att {
        for (j, _, ip) in &att {
            if i != j {
                common::overlay::ping_ok(&nss.get(ns), ip.addr(), 2);
            }
        }
    }
    // `network ls` shows each host's block.
    for (i, _, ip) in &att {
        let out = hosts[*i].run(OVERLAYCTL, &["network", "ls", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let app = rows(&v)
            .iter()
            .find(|r| str_field(r, "name") == "app")
            .expect("app listed");
        let want = block_of(*ip, 26).to_string();
        assert!(
            app["blocks"]
                .as_array()
                .is_some_and(|b| b.iter().any(|x| x == want.as_str())),
            "host {} does not list block {want}: {app}",
            i + 1
        );
    }
    detach_all(&hosts, &att);
}

#[test]

fn cluster_scale_a_16_with_over_100_namespaces_on_3_hosts() {
    let tb = Testbed::builder().hosts(3).bridge(BridgeMode::Daemon).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let _daemons = form_cluster(&tb, &hosts, "c", &|_| Vec::new());
    create_network(&hosts, "10.61.0.0/16");
    let mut nss = Nss::new(&tb);
    // Host 1 needs more than one /26 block (64 addresses minus the reserved ones of the first block).
    let att = attach_many(&tb, &mut nss, &hosts, &[70, 34, 34]);
    assert!(att.len() >= 100);
    let blocks = check_distinct(&att, "10.61.0.0/16".parse().unwrap(), 26);
    println!("blocks per host: {blocks:?}");
    assert!(
        blocks[&0].len() > 1,
        "host 1 holds one block for 70 addresses: {blocks:?}"
    );
    // A sample of cross-host pairs.
    let mut pairs = 0;
    for k in 0..12 {
        let a = &att[(k * 7) % 70];
        let b = &att[70 + (k * 5) % 68];
        assert_ne!(a.0, b.0);
        common::overlay::ping_ok(&nss.get(&a.1), b.2.addr(), 1);
        pairs += 1;
    }
    assert!(pairs >= 10);
    detach_all(&hosts, &att);
}

#[test]

fn cluster_egress_follows_network_create_and_rm() {
    let tb = Testbed::builder().hosts(3).bridge(BridgeMode::Daemon).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let _daemons = form_cluster(&tb, &hosts, "c", &|_| Vec::new());
    ctl_socket(
        hosts[0],
        &[
            "network",
            "create",
            "web",
            "--vni",
            "300",
            "--subnet",
            "10.62.0.0/16",
            "--egress",
        ],
    )
    .unwrap_or_else(|e| panic!("network create: {e}"));
    let has_egress = |h: &Host| {
        h.exec("nft", &["list", "tables"])
            .is_ok_and(|t| t.contains("inet overlayd"))
            && h.exec("ip", &["-o", "addr", "show", "dev", "ovbr300"])
                .is_ok_and(|a| a.contains("10.62.0.1/16"))
    };
    assert!(
        wait_until(Duration::from_secs(5), || hosts.iter().all(|h| has_egress(h))),
        "egress (nft table, gateway on ovbr300) not on every host within 5 s"
    );
    let mut nss = Nss::new(&tb);
    let ns = nss.add(format!("ovt{}eg", tb.id()));
    let out = ctl_socket(
        hosts[1],
        &["attach", "--netns", &ns, "--network", "web", "--json"],
    )
    .unwrap_or_else(|e| panic!("attach: {e}"));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gateway"], "10.62.0.1", "{v}");
    // Through host 2 to host 3's underlay address (inside the testbed).
    let to = hosts[2].underlay_ip();
    common::overlay::ping_ok(&nss.get(&ns), to, 2);
    ctl_socket(hosts[1], &["detach", "--netns", &ns, "--network", "web"]).unwrap();
    ctl_socket(hosts[0], &["network", "rm", "web", "--force"]).unwrap_or_else(|e| panic!("network rm: {e}"));
    assert!(
        wait_until(Duration::from_secs(5), || hosts.iter().all(|h| h
            .exec("nft", &["list", "tables"])
            .is_ok_and(|t| !t.contains("overlayd")))),
        "egress table left after network rm"
    );
}

#[test]

fn cluster_attachments_survive_a_restart_and_keep_their_addresses() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let mut daemons = form_cluster(&tb, &hosts, "c", &|_| Vec::new());
    create_network(&hosts, "10.63.0.0/16");
    let mut nss = Nss::new(&tb);
    let att = attach_many(&tb, &mut nss, &hosts, &[1, 1]);
    let (a, b) = (&att[0], &att[1]);
    common::overlay::ping_ok(&nss.get(&a.1), b.2.addr(), 1);

    // Restart host 2's overlayd with the same arguments and state dir.
    let h2 = hosts[1];
    let mut d2 = daemons.pop().unwrap();
    d2.signal("TERM").unwrap();
    assert!(
        d2.wait_timeout(Duration::from_secs(10)).is_some(),
        "no exit on SIGTERM:\n{}",
        d2.log()
    );
    let tok = ctl_socket(hosts[0], &["token"]).unwrap();
    let seed = hosts[0].underlay_ip().to_string();
    let mut d2 = spawn_overlayd(
        h2,
        &[
            "--peer",
            &seed,
            "--token",
            tok.trim(),
            "--state-dir",
            &state_dir(&tb, h2, "c"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || !d2.is_running()
            || ctl_socket(h2, &["network", "ls", "--json"])
                .is_ok_and(|o| o.contains("\"app\""))),
        "restarted overlayd did not get network app back:\n{}",
        d2.log()
    );
    assert!(d2.is_running(), "restarted overlayd exited:\n{}", d2.log());
    let list = ctl_socket(h2, &["attachments", "--json"]).unwrap();
    assert!(
        list.contains(&b.2.to_string()),
        "attachment lost on restart: {list}"
    );
    common::overlay::ping_ok(&nss.get(&a.1), b.2.addr(), 2);
    common::overlay::ping_ok(&nss.get(&b.1), a.2.addr(), 2);
    // A new attach on the restarted host does not get the kept address again.
    let ns = nss.add(format!("ovt{}rz", tb.id()));
    let ip = attach_no_ip(h2, &ns);
    assert_ne!(ip.addr(), b.2.addr(), "address handed out twice after a restart");
    daemons.push(d2);
}
