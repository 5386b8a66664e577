//! Helpers shared by the overlayd end-to-end tests (not the examples: they include only `testbed.rs`).
#![allow(dead_code)]

use super::testbed::{wait_until, Host, Netns};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

pub const OVERLAYD: &str = env!("CARGO_BIN_EXE_overlayd");
pub const OVERLAYCTL: &str = env!("CARGO_BIN_EXE_overlayctl");

/// Waits until `from` reaches `to` (10 s), then requires `count` of `count` pings to come back.
pub fn ping_ok(from: &impl Netns, to: Ipv4Addr, count: u32) {
    assert!(
        wait_until(Duration::from_secs(10), || from.ping(to, 1).is_ok()),
        "{} → {to}: no ping reply within 10 s",
        from.ns()
    );
    let p = from
        .ping(to, count)
        .unwrap_or_else(|e| panic!("{} → {to}: {e}", from.ns()));
    assert_eq!(
        p.received,
        p.transmitted,
        "{} → {to}: lost pings {p:?}",
        from.ns()
    );
}

/// `overlayctl <what> --json` on `host`, parsed.
pub fn ctl_json(host: &Host, what: &str) -> Value {
    let out = host.run(OVERLAYCTL, &[what, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "`overlayctl {what} --json` on {} is not JSON ({e}):\n{out}",
            host.ns()
        )
    })
}
