//! `overlayctl`: talk to a running overlayd's admin API and print JSON or aligned tables.
//!
//! Read-only commands go to the TCP address (`--admin`) by default; `--admin-socket PATH` selects the
//! root-only Unix socket, which every privileged route (see `admin::ROUTES`) requires.

use crate::admin::{self, Access, Method};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where overlayctl sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Socket(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Socket(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("`overlayctl {command}` needs overlayd's admin socket (root only): run it as root with --admin-socket {default} (or the --admin-socket overlayd was started with)", default = admin::DEFAULT_ADMIN_SOCKET)]
    NeedsSocket { command: String },
    #[error("cannot reach overlayd at {target}: {source} (is overlayd running? in which network namespace? pass --admin if it listens elsewhere)")]
    Connect { target: Target, source: std::io::Error },
    #[error("no admin socket at {target}: is overlayd running? pass the --admin-socket it was started with")]
    NoSocket { target: Target },
    #[error("permission denied on the admin socket {target}: it is root-only, run overlayctl as root")]
    SocketDenied { target: Target },
    #[error("overlayd at {target} refused (HTTP {status}): {message}")]
    Status {
        target: Target,
        status: u16,
        message: String,
    },
    #[error("overlayd at {target} sent a malformed answer: {what}")]
    Malformed { what: String, target: Target },
    #[error("I/O error talking to {target}: {source}")]
    Io { target: Target, source: std::io::Error },
}

/// The target for a command: the socket if given; else TCP, unless the route is privileged.
pub fn target_for(
    command: &str,
    method: Method,
    path: &str,
    admin: SocketAddr,
    socket: Option<PathBuf>,
) -> Result<Target, CtlError> {
    if let Some(p) = socket {
        return Ok(Target::Socket(p));
    }
    match admin::find_route(method, path) {
        Ok(r) if r.access == Access::Privileged => Err(CtlError::NeedsSocket {
            command: command.to_string(),
        }),
        _ => Ok(Target::Tcp(admin)),
    }
}

trait Stream: Read + Write {
    /// Wait for data without a deadline.
    fn set_no_read_timeout(&self) -> std::io::Result<()>;
}
impl Stream for TcpStream {
    fn set_no_read_timeout(&self) -> std::io::Result<()> {
        self.set_read_timeout(None)
    }
}
impl Stream for UnixStream {
    fn set_no_read_timeout(&self) -> std::io::Result<()> {
        self.set_read_timeout(None)
    }
}

fn connect(target: &Target) -> Result<Box<dyn Stream>, CtlError> {
    let io = |source| CtlError::Io {
        target: target.clone(),
        source,
    };
    match target {
        Target::Tcp(addr) => {
            let s = TcpStream::connect_timeout(addr, Duration::from_secs(3)).map_err(|source| {
                CtlError::Connect {
                    target: target.clone(),
                    source,
                }
            })?;
            s.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
            s.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
            Ok(Box::new(s))
        }
        Target::Socket(path) => {
            let s = UnixStream::connect(path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => CtlError::NoSocket {
                    target: target.clone(),
                },
                std::io::ErrorKind::PermissionDenied => CtlError::SocketDenied {
                    target: target.clone(),
                },
                _ => CtlError::Connect {
                    target: target.clone(),
                    source,
                },
            })?;
            s.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
            s.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
            Ok(Box::new(s))
        }
    }
}

/// Long enough for `diag`, which waits for probe replies from every peer (a few seconds when some are lost).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect to `target` and send one request (`Connection: close`, the `Host` header TCP requires).
fn send(target: &Target, method: Method, path: &str, body: &str) -> Result<Box<dyn Stream>, CtlError> {
    let mut s = connect(target)?;
    let host = match target {
        Target::Tcp(a) => a.to_string(),
        Target::Socket(_) => "localhost".to_string(),
    };
    write!(
        s,
        "{} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        method.as_str(),
        body.len()
    )
    .map_err(|source| CtlError::Io {
        target: target.clone(),
        source,
    })?;
    Ok(s)
}

/// Send one request and return the body of a 200 answer.
pub fn request(target: &Target, method: Method, path: &str, body: &str) -> Result<String, CtlError> {
    let mut s = send(target, method, path, body)?;
    let io = |source| CtlError::Io {
        target: target.clone(),
        source,
    };
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let malformed = |what: &str| CtlError::Malformed {
        what: what.to_string(),
        target: target.clone(),
    };
    let text = String::from_utf8(raw).map_err(|_| malformed("not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| malformed("no header end"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed("no status line"))?;
    if status != 200 {
        return Err(CtlError::Status {
            target: target.clone(),
            status,
            message: error_message(body),
        });
    }
    Ok(body.to_string())
}

/// GET a stream of lines (`/v1/fdb/watch`): `on_line` gets each line until it returns false or overlayd
/// closes the stream. Waits for lines without a deadline (a quiet table sends only a heartbeat every 30 s).
pub fn stream(target: &Target, path: &str, mut on_line: impl FnMut(&str) -> bool) -> Result<(), CtlError> {
    use std::io::BufRead;
    let s = send(target, Method::Get, path, "")?;
    let io = |source| CtlError::Io {
        target: target.clone(),
        source,
    };
    let malformed = |what: &str| CtlError::Malformed {
        what: what.to_string(),
        target: target.clone(),
    };
    s.set_no_read_timeout().map_err(io)?;
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed("no status line"))?;
    // The rest of the head.
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 || line == "\r\n" {
            break;
        }
    }
    if status != 200 {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut body);
        return Err(CtlError::Status {
            target: target.clone(),
            status,
            message: error_message(&body),
        });
    }
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        if !on_line(line.trim_end()) {
            return Ok(());
        }
    }
}

/// A `{"event":"heartbeat"}` line: overlayd's sign of life on a quiet stream, nothing to show a person.
pub fn is_heartbeat(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["event"] == "heartbeat")
}

/// One `overlayctl fdb --watch` line for a person: `HH:MM:SS.µs (UTC) EVENT NETWORK VNI MAC VTEP ORIGIN`, a
/// separator after the baseline, a warning for lost events. `None` for a line this overlayctl cannot read.
pub fn render_watch_line(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let ts = v["ts_us"].as_u64()?;
    let day = ts % 86_400_000_000;
    let time = format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3_600_000_000,
        day / 60_000_000 % 60,
        day / 1_000_000 % 60,
        day % 1_000_000
    );
    let event = v["event"].as_str()?;
    Some(match event {
        "synced" => format!("{time} -- table above; changes follow --"),
        "lost" => format!(
            "{time} -- lost {} events (this reader fell behind); the table follows again --",
            v["count"].as_u64()?
        ),
        _ => {
            let s = |k: &str| match &v[k] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!(
                "{time} {event:<7} {} {} {} {} {}",
                s("network"),
                s("vni"),
                s("mac"),
                s("vtep"),
                s("origin")
            )
        }
    })
}

/// GET `path`.
pub fn get(target: &Target, path: &str) -> Result<String, CtlError> {
    request(target, Method::Get, path, "")
}

/// The `error` field of a JSON error body, else the body itself (trimmed).
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// Render rows as a table whose columns are as wide as their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let l: Vec<String> = cells.zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(l.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Human rendering of the JSON served on /v1/fdb, /v1/stats and /v1/peers.
pub fn render(kind: &str, body: &str) -> Result<String, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let empty = Vec::new();
    Ok(match kind {
        "fdb" | "peers" | "networks" | "attachments" => {
            let cols: &[&str] = match kind {
                "attachments" => &["network", "netns", "ifname", "ip", "mac", "host_ifname", "mtu"],
                "fdb" => &["network", "vni", "mac", "vtep", "origin", "age_s"],
                "networks" => &[
                    "name", "vni", "subnet", "mtu", "bridge", "tap", "egress", "gateway", "blocks",
                ],
                _ => &[
                    "id",
                    "addr",
                    "vtep",
                    "state",
                    "generation",
                    "renewal",
                    "last_seen_s",
                    "network",
                ],
            };
            let s = |v: &serde_json::Value| match v {
                serde_json::Value::Array(a) if a.is_empty() => "-".to_string(),
                serde_json::Value::Array(a) => a.iter().map(&s).collect::<Vec<_>>().join(","),
                other => s(other),
            };
            let rows: Vec<Vec<String>> = v
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|r| cols.iter().map(|c| s(&r[*c])).collect())
                .collect();
            let headers: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            table(&headers, &rows)
        }
        "trace" => {
            let mut rows = Vec::new();
            for k in [
                "query",
                "network",
                "vni",
                "mac",
                "resolved_via",
                "verdict",
                "vtep",
                "origin",
                "age_s",
                "flood_to",
                "path_mtu",
                "note",
            ] {
                match &v[k] {
                    serde_json::Value::Null => {}
                    serde_json::Value::Array(a) if a.is_empty() => {}
                    serde_json::Value::Array(a) => rows.push(vec![
                        k.to_string(),
                        a.iter().map(&s).collect::<Vec<_>>().join(", "),
                    ]),
                    x => rows.push(vec![k.to_string(), s(x)]),
                }
            }
            table(&["FIELD", "VALUE"], &rows)
        }
        _ => {
            let mut rows = Vec::new();
            if let Some(obj) = v.as_object() {
                for (k, val) in obj {
                    match val {
                        serde_json::Value::Object(inner) => {
                            for (ik, iv) in inner {
                                rows.push(vec![format!("{k}.{ik}"), s(iv)]);
                            }
                        }
                        // `workers`: one object per worker, shown as workers.<i>.<counter>.
                        serde_json::Value::Array(items) if items.iter().all(|i| i.is_object()) => {
                            for (i, item) in items.iter().enumerate() {
                                for (ik, iv) in item.as_object().into_iter().flatten() {
                                    if ik != "worker" {
                                        rows.push(vec![format!("{k}.{i}.{ik}"), s(iv)]);
                                    }
                                }
                            }
                        }
                        _ => rows.push(vec![k.clone(), s(val)]),
                    }
                }
            }
            table(&["COUNTER", "VALUE"], &rows)
        }
    })
}

/// Human rendering of `/v1/diag`: one ✓/✗ line per check, the fix under each ✗; and whether all passed.
pub fn render_diag(body: &str) -> Result<(String, bool), serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Check {
        name: String,
        ok: bool,
        detail: String,
        fix: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Report {
        ok: bool,
        checks: Vec<Check>,
    }
    let r: Report = serde_json::from_str(body)?;
    let mut out = String::new();
    for c in &r.checks {
        out.push_str(&format!(
            "{} {}: {}\n",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        ));
        if let (false, Some(f)) = (c.ok, &c.fix) {
            out.push_str(&format!("    fix: {f}\n"));
        }
    }
    let failed = r.checks.iter().filter(|c| !c.ok).count();
    out.push_str(&if failed == 0 {
        format!("all {} checks passed\n", r.checks.len())
    } else {
        format!("{failed} of {} checks failed\n", r.checks.len())
    });
    Ok((out, r.ok && failed == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xxxx".into(), "1".into()], vec!["y".into(), "22".into()]],
        );
        assert_eq!(t, "A     LONGER\nxxxx  1\ny     22\n");
    }

    #[test]
    fn renders_fdb_and_stats() {
        let fdb = r#"[{"vni":42,"mac":"02:00:00:00:00:02","vtep":"10.0.0.2","origin":"learned","age_s":3}]"#;
        let t = render("fdb", fdb).unwrap();
        assert!(t.starts_with("NETWORK  VNI  MAC"), "{t}");
        assert!(
            t.contains("-        42   02:00:00:00:00:02  10.0.0.2  learned  3"),
            "{t}"
        );
        let nets = r#"[{"name":"a","vni":100,"subnet":"10.20.0.0/16","mtu":1450,"bridge":"ovbr100","tap":"ovl100","egress":false,"gateway":null,"blocks":[]}]"#;
        let t = render("networks", nets).unwrap();
        assert!(t.starts_with("NAME  VNI  SUBNET"), "{t}");
        assert!(
            t.contains("a     100  10.20.0.0/16  1450  ovbr100  ovl100  false   -        -"),
            "{t}"
        );
        let st = render("stats", r#"{"rx_frames":5,"drops":{"short":2}}"#).unwrap();
        assert!(st.contains("drops.short  2"), "{st}");
        let st = render(
            "stats",
            r#"{"workers":[{"worker":0,"rx_datagrams":3},{"worker":1,"rx_datagrams":4}]}"#,
        )
        .unwrap();
        assert!(
            st.contains("workers.0.rx_datagrams  3") && st.contains("workers.1.rx_datagrams  4"),
            "{st}"
        );
        assert!(render("fdb", "not json").is_err());
    }

    #[test]
    fn heartbeats_are_told_apart_from_the_lines_a_person_sees() {
        assert!(is_heartbeat(r#"{"event":"heartbeat","ts_us":1796057257631507}"#));
        let synced = r#"{"event":"synced","seq":0,"ts_us":1796057257631507}"#;
        assert!(!is_heartbeat(synced));
        assert!(render_watch_line(synced).is_some());
        assert!(!is_heartbeat("not json"));
    }

    #[test]
    fn privileged_commands_need_the_socket() {
        let tcp: SocketAddr = "127.0.0.1:7947".parse().unwrap();
        let e = target_for("token", Method::Get, "/v1/token", tcp, None).unwrap_err();
        assert!(
            e.to_string().contains("--admin-socket /run/overlayd/admin.sock"),
            "{e}"
        );
        assert_eq!(
            target_for("fdb", Method::Get, "/v1/fdb", tcp, None).unwrap(),
            Target::Tcp(tcp)
        );
        let p = PathBuf::from("/x.sock");
        assert_eq!(
            target_for("token", Method::Get, "/v1/token", tcp, Some(p.clone())).unwrap(),
            Target::Socket(p)
        );
    }

    #[test]
    fn renders_diag_with_fixes() {
        let body = r#"{"ok":false,"checks":[{"name":"tap ovl1","ok":true,"detail":"up"},{"name":"peer 10.0.0.2 udp/4789","ok":false,"detail":"no answer","fix":"allow UDP 4789"}]}"#;
        let (t, ok) = render_diag(body).unwrap();
        assert!(!ok);
        assert!(t.contains("✓ tap ovl1: up\n"), "{t}");
        assert!(
            t.contains("✗ peer 10.0.0.2 udp/4789: no answer\n    fix: allow UDP 4789\n"),
            "{t}"
        );
        assert!(t.ends_with("1 of 2 checks failed\n"), "{t}");
        assert!(render_diag(r#"{"ok":true,"checks":[]}"#).unwrap().1);
        assert!(render_diag("nope").is_err());
    }

    #[test]
    fn error_bodies_become_messages() {
        assert_eq!(error_message(r#"{"error":"no join token"}"#), "no join token");
        assert_eq!(error_message(" plain \n"), "plain");
    }
}
