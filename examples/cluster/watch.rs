//! The watcher (`--watch`, run inside a host namespace) and the parsing of its log.

use crate::testbed::Daemon;
use crate::unix_us;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

/// `--watch <admin addr> <period ms>`: print `<unix µs> <state>` whenever the state changes, where state is
/// `down` (admin unreachable) or `<control MACs>|<local MACs>`, each sorted and comma-separated (`-` if none).
pub(crate) fn watch(args: &[String]) -> ExitCode {
    let (Some(addr), Some(period)) = (args.first(), args.get(1).and_then(|p| p.parse::<u64>().ok())) else {
        eprintln!("usage: --watch <admin addr> <period ms>");
        return ExitCode::from(2);
    };
    let mut last = String::new();
    let mut out = std::io::stdout();
    loop {
        let now = unix_us();
        let state = match admin_get(addr, "/v1/fdb") {
            Some(body) => format!("{}|{}", macs_of(&body, "control"), macs_of(&body, "local")),
            None => "down".to_string(),
        };
        if state != last {
            if writeln!(out, "{now} {state}").and_then(|()| out.flush()).is_err() {
                return ExitCode::SUCCESS;
            }
            last = state;
        }
        std::thread::sleep(Duration::from_millis(period));
    }
}

fn admin_get(addr: &str, path: &str) -> Option<String> {
    let sa = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn macs_of(body: &str, origin: &str) -> String {
    let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(body) else {
        return "bad-json".into();
    };
    let macs: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.get("origin").and_then(Value::as_str) == Some(origin))
        .filter_map(|r| r.get("mac").and_then(Value::as_str).map(str::to_ascii_lowercase))
        .collect();
    if macs.is_empty() {
        "-".into()
    } else {
        macs.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn mac_set(s: &str) -> BTreeSet<String> {
    match s {
        "-" => BTreeSet::new(),
        s => s.split(',').map(str::to_string).collect(),
    }
}

/// A watcher's log: (unix µs, Some(control MACs) or None when the admin endpoint was down).
pub(crate) fn watch_log(d: &Daemon) -> Vec<(u64, Option<BTreeSet<String>>)> {
    watch_log_of(d, 0)
}

/// The same for the local MACs (those overlayd has seen behind its own bridge).
pub(crate) fn local_log(d: &Daemon) -> Vec<(u64, Option<BTreeSet<String>>)> {
    watch_log_of(d, 1)
}

fn watch_log_of(d: &Daemon, part: usize) -> Vec<(u64, Option<BTreeSet<String>>)> {
    d.log()
        .lines()
        .filter_map(|l| {
            let (t, s) = l.split_once(' ')?;
            let t = t.parse().ok()?;
            let set = match s {
                "down" => None,
                s => Some(mac_set(s.split('|').nth(part)?)),
            };
            Some((t, set))
        })
        .collect()
}

/// First time at or after `from` at which `cond` holds in the watcher's log (`from` itself if the state in
/// force then already satisfies it).
pub(crate) fn first_time(
    log: &[(u64, Option<BTreeSet<String>>)],
    from: u64,
    cond: impl Fn(&Option<BTreeSet<String>>) -> bool,
) -> Option<u64> {
    let split = log.partition_point(|(t, _)| *t <= from);
    if split > 0 && cond(&log[split - 1].1) {
        return Some(from);
    }
    log[split..].iter().find(|(_, s)| cond(s)).map(|(t, _)| *t)
}
