//! Helpers shared by the overlayd end-to-end tests (not the examples: they include only `testbed.rs`).
#![allow(dead_code)]

use super::testbed::{wait_until, CmdError, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
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
/// must not share the default socket path nor the default state dir (and its lock). Like every overlayd the
/// testbed spawns, it runs `--workers 1` unless `args` give `--workers` (see `Host::spawn`).
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

// ---------------------------------------------------------------------------------------------------------
// Cluster tests: state dirs and `peers`/`fdb`/`stats` JSON rows (tests/cluster.rs, tests/trust_cluster.rs).
// ---------------------------------------------------------------------------------------------------------

/// A per-daemon state dir inside the testbed's log dir (unique per testbed, removed by its Drop).
pub fn state_dir(tb: &Testbed, host: &Host, tag: &str) -> String {
    let d: PathBuf = tb.log_dir().join(format!("state-h{}-{tag}", host.index()));
    d.to_string_lossy().into_owned()
}

/// Members `peers --json` shows as alive.
pub fn alive_count(peers: &Value) -> usize {
    rows(peers)
        .iter()
        .filter(|r| str_field(r, "state") == "alive")
        .count()
}

/// A cluster on `hosts`: the first with `--init-cluster`, the others joining through it with its token one
/// after the other (each daemon with `extra(host)` added and its own state dir tagged `tag`); waits (20 s)
/// until every node sees every node alive.
pub fn form_cluster(
    tb: &Testbed,
    hosts: &[&Host],
    tag: &str,
    extra: &dyn Fn(&Host) -> Vec<String>,
) -> Vec<Daemon> {
    form(tb, hosts, tag, extra, false)
}

/// Like [`form_cluster`], but every joining daemon is started at once (concurrent joins through one
/// admitter).
pub fn form_cluster_at_once(
    tb: &Testbed,
    hosts: &[&Host],
    tag: &str,
    extra: &dyn Fn(&Host) -> Vec<String>,
) -> Vec<Daemon> {
    form(tb, hosts, tag, extra, true)
}

fn form(
    tb: &Testbed,
    hosts: &[&Host],
    tag: &str,
    extra: &dyn Fn(&Host) -> Vec<String>,
    at_once: bool,
) -> Vec<Daemon> {
    let h1 = hosts[0];
    let local = h1.underlay_ip().to_string();
    let sd = state_dir(tb, h1, tag);
    let mut a1: Vec<&str> = vec!["--init-cluster", "--local", &local, "--state-dir", &sd];
    let x1 = extra(h1);
    a1.extend(x1.iter().map(String::as_str));
    let d1 = start_overlayd(h1, &a1);
    let tok = ctl_socket(h1, &["token"]).unwrap_or_else(|e| panic!("{e}"));
    let tok = tok.trim().to_string();
    assert!(tok.starts_with("OVL1-"), "unexpected token format: {tok:?}");
    let spawn = |h: &Host| {
        let sd = state_dir(tb, h, tag);
        let mut a: Vec<&str> = vec!["--peer", &local, "--token", &tok, "--state-dir", &sd];
        let x = extra(h);
        a.extend(x.iter().map(String::as_str));
        spawn_overlayd(h, &a)
    };
    let mut daemons = vec![d1];
    if at_once {
        let joining: Vec<Daemon> = hosts[1..].iter().map(|h| spawn(h)).collect();
        for (h, d) in hosts[1..].iter().zip(joining) {
            daemons.push(joined(h, d, &daemons[0]));
        }
    } else {
        for h in &hosts[1..] {
            let d = spawn(h);
            daemons.push(joined(h, d, &daemons[0]));
        }
    }
    let n = hosts.len();
    let formed = wait_until(Duration::from_secs(20), || {
        hosts.iter().all(|h| alive_count(&ctl_json(h, "peers")) == n)
    });
    if !formed {
        for h in hosts {
            eprintln!("peers on host {}: {}", h.index(), ctl_json(h, "peers"));
        }
        panic!("the {n} nodes did not all see {n} alive members within 20 s");
    }
    daemons
}

/// Waits (20 s) until the joining daemon `d` on `h` answers on its admin address; panics with its log and
/// the admitter's if it exits first.
fn joined(h: &Host, mut d: Daemon, admitter: &Daemon) -> Daemon {
    let ready = wait_until(Duration::from_secs(20), || {
        !d.is_running() || h.exec(OVERLAYCTL, &["stats", "--json"]).is_ok()
    });
    if let Some(st) = d.try_wait() {
        panic!(
            "`{}` exited during join ({st}):\n{}\nadmitter log:\n{}",
            d.cmdline(),
            d.log(),
            admitter.log()
        );
    }
    assert!(ready, "`{}` did not join within 20 s:\n{}", d.cmdline(), d.log());
    d
}

pub fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

pub fn str_field<'a>(row: &'a Value, k: &str) -> &'a str {
    row.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The `peers` row whose address is `ip:<gossip port>`, if any.
pub fn peer_row(peers: &Value, ip: Ipv4Addr) -> Option<&Value> {
    let prefix = format!("{ip}:");
    rows(peers)
        .iter()
        .find(|r| str_field(r, "addr").starts_with(&prefix))
}

pub fn fdb_row<'a>(fdb: &'a Value, mac: &str) -> Option<&'a Value> {
    rows(fdb)
        .iter()
        .find(|r| str_field(r, "mac").eq_ignore_ascii_case(mac))
}

/// `drops.non_member` of `overlayctl stats --json`.
pub fn non_member_drops(host: &Host) -> u64 {
    let v = ctl_json(host, "stats");
    v.get("drops")
        .and_then(|d| d.get("non_member"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// A top-level counter of `overlayctl stats --json`; panics naming it when absent.
pub fn counter(s: &Value, key: &str) -> u64 {
    s.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("stats has no counter `{key}`: {s}"))
}

/// `drops.<reason>` of `overlayctl stats --json`; panics naming it when absent.
pub fn drops(s: &Value, reason: &str) -> u64 {
    s.get("drops")
        .and_then(|d| d.get(reason))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("stats has no drops.{reason}: {s}"))
}
