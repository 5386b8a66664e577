//! The watcher (`--watch`, run inside a host namespace: follows the daemon's FDB change stream, or polls an
//! overlayd without one) and the parsing of its log.

use crate::testbed::Daemon;
use crate::unix_us;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

/// `--watch <admin addr> <period ms>`: print `<unix µs> <state>` whenever the state changes, where state is
/// `down` (admin unreachable) or `<control MACs>|<local MACs>`, each sorted and comma-separated (`-` if none).
///
/// Stream mode (an overlayd with `GET /v1/fdb/watch`): the state is kept from the daemon's change events and
/// each line carries the time the daemon stamped on the change (the baseline's when the stream starts), so
/// the figures have no polling resolution. Poll mode (an older overlayd answers 404): `GET /v1/fdb` every
/// `period` ms, stamped when read. The first line, `# mode stream` or `# mode poll <period> ms`, says which.
pub(crate) fn watch(args: &[String]) -> ExitCode {
    let (Some(addr), Some(period)) = (args.first(), args.get(1).and_then(|p| p.parse::<u64>().ok())) else {
        eprintln!("usage: --watch <admin addr> <period ms>");
        return ExitCode::from(2);
    };
    let mut log = Log::default();
    loop {
        match stream(addr, &mut log) {
            Stream::NoEndpoint => break,
            Stream::Closed => {
                if !log.print(unix_us(), "down".into()) {
                    return ExitCode::SUCCESS;
                }
                // Until the daemon answers again (it starts, restarts): connection attempts are cheap.
                std::thread::sleep(Duration::from_millis(RECONNECT_MS));
            }
            Stream::Stdout => return ExitCode::SUCCESS,
        }
    }
    if !log.mode(&format!("poll {period} ms")) {
        return ExitCode::SUCCESS;
    }
    loop {
        let now = unix_us();
        let state = match admin_get(addr, "/v1/fdb") {
            Some(body) => format!("{}|{}", macs_of(&body, "control"), macs_of(&body, "local")),
            None => "down".to_string(),
        };
        if !log.print(now, state) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(period));
    }
}

/// Between connection attempts while the daemon is down (stream mode).
const RECONNECT_MS: u64 = 10;

/// The watcher's output: state lines, each only when the state changes, times never going back.
#[derive(Default)]
struct Log {
    last: String,
    last_t: u64,
    mode: Option<String>,
}

impl Log {
    /// False when stdout is gone.
    fn print(&mut self, t: u64, state: String) -> bool {
        if state == self.last {
            return true;
        }
        // Stamps come from the daemon's clock (the same clock, read at the change): keep them ordered.
        let t = t.max(self.last_t);
        let mut out = std::io::stdout();
        if writeln!(out, "{t} {state}").and_then(|()| out.flush()).is_err() {
            return false;
        }
        self.last = state;
        self.last_t = t;
        true
    }

    fn mode(&mut self, m: &str) -> bool {
        if self.mode.as_deref() == Some(m) {
            return true;
        }
        self.mode = Some(m.to_string());
        let mut out = std::io::stdout();
        writeln!(out, "# mode {m}").and_then(|()| out.flush()).is_ok()
    }
}

enum Stream {
    /// The daemon has no `/v1/fdb/watch` (404): poll instead.
    NoEndpoint,
    /// Not reachable, or the stream ended (daemon killed, stopped).
    Closed,
    /// Our stdout is gone: stop.
    Stdout,
}

/// Follow `/v1/fdb/watch` until it ends, printing the state at every change.
fn stream(addr: &str, log: &mut Log) -> Stream {
    use std::io::BufRead;
    let Ok(sa) = addr.parse() else {
        return Stream::Closed;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(500)) else {
        return Stream::Closed;
    };
    if write!(
        s,
        "GET /v1/fdb/watch HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return Stream::Closed;
    }
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return Stream::Closed;
    }
    if line.starts_with("HTTP/1.1 404") {
        return Stream::NoEndpoint;
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Stream::Closed;
    }
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return Stream::Closed;
        }
        if line == "\r\n" {
            break;
        }
    }
    if !log.mode("stream") {
        return Stream::Stdout;
    }
    // (VNI, MAC) → origin; printed only once the baseline is complete.
    let mut table: BTreeMap<(u64, String), String> = BTreeMap::new();
    let mut synced = false;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return Stream::Closed;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let t = v["ts_us"].as_u64().unwrap_or_else(unix_us);
        let key = || {
            (
                v["vni"].as_u64().unwrap_or(0),
                v["mac"].as_str().unwrap_or("").to_ascii_lowercase(),
            )
        };
        match v["event"].as_str().unwrap_or("") {
            "present" | "add" | "update" => {
                table.insert(key(), v["origin"].as_str().unwrap_or("").to_string());
            }
            "remove" => {
                table.remove(&key());
            }
            "synced" => synced = true,
            "lost" => {
                // A new baseline follows.
                eprintln!(
                    "watcher: the daemon reports {} lost events; re-reading the table",
                    v["count"]
                );
                table.clear();
                synced = false;
            }
            _ => {}
        }
        if synced {
            let of = |origin: &str| {
                let macs: BTreeSet<&str> = table
                    .iter()
                    .filter(|(_, o)| o.as_str() == origin)
                    .map(|((_, m), _)| m.as_str())
                    .collect();
                if macs.is_empty() {
                    "-".to_string()
                } else {
                    macs.into_iter().collect::<Vec<_>>().join(",")
                }
            };
            if !log.print(t, format!("{}|{}", of("control"), of("local"))) {
                return Stream::Stdout;
            }
        }
    }
}

/// How the watcher observed: `stream` or `poll <period> ms` (its log's `# mode` line), if it said yet.
pub(crate) fn watch_mode(d: &Daemon) -> Option<String> {
    d.log()
        .lines()
        .find_map(|l| l.strip_prefix("# mode ").map(str::to_string))
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
