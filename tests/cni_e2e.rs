//! Issue 11 §2 end to end: `overlayd-cni` driven exactly as a container runtime drives it (environment
//! `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`, the network configuration on
//! stdin) against REAL cluster-mode overlayds on two hosts: a network made with `overlayctl network create`,
//! ADD for a pod namespace on each host (the result names the interfaces, the address and the MTU), ping
//! between the pods, CHECK succeeds, DEL twice succeeds, and once more after the namespace is deleted;
//! nothing (veth, attachment) is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_socket, form_cluster, ping_ok, rows};
use common::testbed::{wait_until, BridgeMode, Host, Netns, Testbed};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CNI: &str = env!("CARGO_BIN_EXE_overlayd-cni");

/// A pod namespace (`ip netns add`), deleted on drop unless already gone.
struct Pod {
    name: String,
    log_dir: PathBuf,
}

impl Netns for Pod {
    fn ns(&self) -> &str {
        &self.name
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Pod {
    fn new(tb: &Testbed, tag: &str) -> Pod {
        let name = format!("pod{tag}-{}", tb.id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (apt-get install iproute2)");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Pod {
            name,
            log_dir: tb.log_dir().to_owned(),
        }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn delete(&self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns del {}: {out:?}", self.name);
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Run the plugin as a runtime does: `(exit code, stdout as JSON or Null, stderr)`.
fn cni(command: &str, container: &str, netns: &str, conf: &Value) -> (i32, Value, String) {
    let mut child = Command::new(CNI)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin:/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {CNI}: {e}"));
    let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}"))
    };
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The plugin's configuration as a runtime (libcni) derives it from the shipped
/// `dist/overlayd-cni.conflist`: the list's `cniVersion` and `name` put into its plugin entry; only the
/// admin socket is this host's.
fn conf(host: &Host) -> Value {
    let list: Value = serde_json::from_str(include_str!("../dist/overlayd-cni.conflist")).unwrap();
    let mut c = list["plugins"][0].clone();
    assert_eq!(c["type"], "overlayd-cni");
    assert_eq!(c["network"], "app");
    c["cniVersion"] = list["cniVersion"].clone();
    c["name"] = list["name"].clone();
    c["socket"] = json!(host.admin_socket().display().to_string());
    c
}

/// veth links in `host`'s namespace.
fn veths(host: &Host) -> Vec<String> {
    host.run("ip", &["-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

fn attachments(host: &Host) -> Vec<Value> {
    let out = ctl_socket(host, &["attachments", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    rows(&v).to_vec()
}

#[test]
fn cni_add_check_del_against_real_overlayds_on_two_hosts() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    tb.cleanup_on_exit();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let _daemons = form_cluster(&tb, &hosts, "c", &|_| Vec::new());
    ctl_socket(
        hosts[0],
        &[
            "network",
            "create",
            "app",
            "--vni",
            "4242",
            "--subnet",
            "10.20.0.0/16",
        ],
    )
    .unwrap_or_else(|e| panic!("network create: {e}"));
    assert!(
        wait_until(Duration::from_secs(5), || hosts
            .iter()
            .all(|h| h.link_exists("ovbr4242"))),
        "network app did not reach both hosts within 5 s"
    );
    let before: Vec<Vec<String>> = hosts.iter().map(|h| veths(h)).collect();

    let pods = [Pod::new(&tb, "a"), Pod::new(&tb, "b")];
    let mut addrs = Vec::new();
    for (i, (h, pod)) in hosts.iter().zip(&pods).enumerate() {
        let id = format!("c0ffee{i}");
        let (code, r, err) = cni("ADD", &id, &pod.path(), &conf(h));
        assert_eq!(code, 0, "ADD on host {}: {r} {err}", h.index());
        assert_eq!(r["cniVersion"], "1.0.0", "{r}");
        let ifs = r["interfaces"]
            .as_array()
            .unwrap_or_else(|| panic!("no interfaces: {r}"));
        let inner = ifs
            .iter()
            .find(|i| i["sandbox"] == pod.path().as_str())
            .unwrap_or_else(|| panic!("no interface in the sandbox: {r}"));
        assert_eq!(inner["name"], "eth0", "{r}");
        assert!(inner["mtu"].as_u64().is_some_and(|m| m > 0), "no mtu: {r}");
        let host_if = ifs[0]["name"].as_str().unwrap_or_else(|| panic!("{r}"));
        assert!(h.link_exists(host_if), "host end {host_if} missing");
        let ip = r["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no ips: {r}"));
        let net: ipnet::Ipv4Net = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert_eq!(
            net.prefix_len(),
            16,
            "container addresses carry the subnet's prefix: {r}"
        );
        assert!("10.20.0.0/16"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&net.addr()));
        // The address is really on eth0 inside the pod.
        let shown = pod.run("ip", &["-o", "addr", "show", "dev", "eth0"]);
        assert!(shown.contains(ip), "eth0 in {} lacks {ip}: {shown}", pod.ns());
        addrs.push(net.addr());
    }
    assert_ne!(addrs[0], addrs[1], "two hosts handed out one address");
    ping_ok(&pods[0], addrs[1], 3);
    ping_ok(&pods[1], addrs[0], 3);

    for (i, (h, pod)) in hosts.iter().zip(&pods).enumerate() {
        let id = format!("c0ffee{i}");
        let (code, r, err) = cni("CHECK", &id, &pod.path(), &conf(h));
        assert_eq!(code, 0, "CHECK on host {}: {r} {err}", h.index());
        for n in 0..2 {
            let (code, r, err) = cni("DEL", &id, &pod.path(), &conf(h));
            assert_eq!(code, 0, "DEL #{} on host {}: {r} {err}", n + 1, h.index());
        }
        assert!(
            attachments(h).is_empty(),
            "attachments left on host {}",
            h.index()
        );
        assert_eq!(veths(h), before[i], "veths left on host {}", h.index());
        // Again once the namespace is gone (a runtime may retry DEL after deleting it).
        pod.delete();
        let (code, r, err) = cni("DEL", &id, &pod.path(), &conf(h));
        assert_eq!(
            code,
            0,
            "DEL after netns deletion on host {}: {r} {err}",
            h.index()
        );
    }
    // A pod deleted while attached: DEL still succeeds and cleans up.
    let pod = Pod::new(&tb, "c");
    let h = hosts[1];
    let (code, r, err) = cni("ADD", "c0ffee9", &pod.path(), &conf(h));
    assert_eq!(code, 0, "ADD: {r} {err}");
    pod.delete();
    let (code, r, err) = cni("DEL", "c0ffee9", &pod.path(), &conf(h));
    assert_eq!(code, 0, "DEL of a deleted namespace: {r} {err}");
    assert!(attachments(h).is_empty(), "attachment of the deleted pod left");
    assert!(
        wait_until(Duration::from_secs(5), || veths(h) == before[1]),
        "veth of the deleted pod left: {:?}",
        veths(h)
    );
}
