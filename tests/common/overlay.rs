//! Helpers shared by the overlayd end-to-end tests (not the examples: they include only `testbed.rs`).
#![allow(dead_code)]

use super::testbed::{wait_until, CmdError, Daemon, Host, Netns};
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

/// Spawns overlayd on `host` with `args`, plus `--admin-socket <host.admin_socket()>` and
/// `--state-dir <log dir>/state-<ns>` unless `args` names them: the namespaces share a filesystem, so daemons
/// must not share the default socket path nor the default state dir (and its lock).
pub fn spawn_overlayd(host: &Host, args: &[&str]) -> Daemon {
    let sock = host.admin_socket();
    let sock = sock.to_string_lossy();
    let state = host.log_dir().join(format!("state-{}", host.ns()));
    let state = state.to_string_lossy();
    let mut v: Vec<&str> = args.to_vec();
    if !args.contains(&"--admin-socket") {
        v.extend(["--admin-socket", &sock]);
    }
    if !args.contains(&"--state-dir") && !args.contains(&"--print-config") {
        v.extend(["--state-dir", &state]);
    }
    host.spawn(OVERLAYD, &v)
}

/// `overlayctl --admin-socket <host's socket> args…` as root.
pub fn ctl_socket(host: &Host, args: &[&str]) -> Result<String, CmdError> {
    let sock = host.admin_socket();
    let sock = sock.to_string_lossy();
    let mut v = vec!["--admin-socket", &sock];
    v.extend_from_slice(args);
    host.exec(OVERLAYCTL, &v)
}

/// [`spawn_overlayd`], then waits (20 s: a join includes a QUIC handshake) until its TCP admin address
/// answers; panics with the log if it exits first.
pub fn start_overlayd(host: &Host, args: &[&str]) -> Daemon {
    let mut d = spawn_overlayd(host, args);
    let ready = wait_until(Duration::from_secs(20), || {
        !d.is_running() || host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok()
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 20 s:\n{}", d.cmdline(), d.log());
    d
}
