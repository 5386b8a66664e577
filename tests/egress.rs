//! Issue 10 §6, end to end: a network with `egress = true` (`[[network]]` in the config) gets its gateway
//! (10.50.0.1/16) on its bridge and an nftables masquerade; a namespace attached to it reaches another
//! host's underlay address through its own host (the other host has no route back to 10.50.0.0/16, so the
//! replies only arrive because the source was masqueraded); after overlayd exits (SIGTERM), the table
//! `inet overlayd` and the gateway are gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_socket, spawn_overlayd};
use common::testbed::{wait_until, BridgeMode, Netns, Testbed};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[test]
fn egress_reaches_another_hosts_underlay_and_is_removed_on_exit() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let conf = tb.log_dir().join(format!("ovt{}-egress.toml", tb.id()));
    std::fs::write(
        &conf,
        "[[network]]\nname = \"web\"\nvni = 300\nsubnet = \"10.50.0.0/16\"\negress = true\n",
    )
    .unwrap();
    let local = h1.underlay_ip().to_string();
    let peer = h2.underlay_ip().to_string();
    let conf_s = conf.to_string_lossy().to_string();
    let mut d = spawn_overlayd(h1, &["--config", &conf_s, "--local", &local, "--peer", &peer]);
    let ready = wait_until(Duration::from_secs(15), || {
        !d.is_running() || ctl_socket(h1, &["attachments", "--json"]).is_ok()
    });
    assert!(ready && d.is_running(), "overlayd did not start:\n{}", d.log());

    let tables = h1.run("nft", &["list", "tables"]);
    assert!(
        tables.contains("inet overlayd"),
        "no egress table while running: {tables}"
    );
    let gw = h1.run("ip", &["-o", "addr", "show", "dev", "ovbr300"]);
    assert!(gw.contains("10.50.0.1/16"), "no gateway on the bridge: {gw}");

    let name = format!("ovt{}e1", tb.id());
    let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
    assert!(st.success());
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = Del(name.clone());
    let out = ctl_socket(
        h1,
        &[
            "attach",
            "--netns",
            &name,
            "--network",
            "web",
            "--ip",
            "10.50.0.10/16",
            "--json",
        ],
    )
    .unwrap_or_else(|e| panic!("attach: {e}\n{}", d.log()));
    let a: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["gateway"], "10.50.0.1", "{a}");
    let route = run_in(&name, "ip", &["route", "show", "default"]);
    assert!(
        route.contains("via 10.50.0.1"),
        "no default route via the gateway: {route}"
    );

    // The container reaches host 2's underlay address (inside the testbed) through host 1.
    let to = h2.underlay_ip().to_string();
    let ok = wait_until(Duration::from_secs(10), || {
        Command::new("ip")
            .args([
                "netns", "exec", &name, "ping", "-n", "-q", "-c", "1", "-W", "2", &to,
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ok, "container → {to} through egress failed:\n{}", d.log());
    let back = h2.exec("ip", &["route", "get", "10.50.0.10"]);
    assert!(
        back.is_err(),
        "host 2 must have no route back to the overlay: {back:?}"
    );

    d.signal("TERM").unwrap();
    assert!(
        d.wait_timeout(Duration::from_secs(10)).is_some(),
        "overlayd did not exit on SIGTERM:\n{}",
        d.log()
    );
    let tables = h1.run("nft", &["list", "tables"]);
    assert!(
        !tables.contains("overlayd"),
        "egress table left after exit: {tables}"
    );
    assert!(
        h1.exec("ip", &["-o", "addr", "show", "dev", "ovbr300"])
            .map_or(true, |s| !s.contains("10.50.0.1/16")),
        "gateway address left after exit"
    );
}

fn run_in(ns: &str, cmd: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, cmd])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
