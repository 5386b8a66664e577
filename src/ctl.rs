//! `overlayctl`: query a running overlayd's admin endpoint and print JSON or aligned tables.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach overlayd at {addr}: {source} (is overlayd running? in which network namespace? pass --admin if it listens elsewhere)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("overlayd at {addr} answered with HTTP {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("overlayd at {addr} sent a malformed answer: {0}", addr = .1)]
    Malformed(String, SocketAddr),
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// GET `path` from the admin endpoint and return the body.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, CtlError> {
    request(addr, "GET", path)
}

/// `method` (GET or POST, no body) `path` on the admin endpoint; the body of a 200 answer.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<String, CtlError> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|source| CtlError::Connect { addr, source })?;
    let io = |source| CtlError::Io { addr, source };
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8(raw).map_err(|_| CtlError::Malformed("not UTF-8".into(), addr))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| CtlError::Malformed("no header end".into(), addr))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| CtlError::Malformed("no status line".into(), addr))?;
    if status != 200 {
        return Err(CtlError::Status {
            addr,
            status,
            body: body.to_string(),
        });
    }
    Ok(body.to_string())
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
        other => other.to_string(),
    };
    let empty = Vec::new();
    Ok(match kind {
        "fdb" | "peers" => {
            let cols: &[&str] = if kind == "fdb" {
                &["vni", "mac", "vtep", "origin", "age_s"]
            } else {
                &["id", "addr", "state", "generation"]
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
        _ => {
            let mut rows = Vec::new();
            if let Some(obj) = v.as_object() {
                for (k, val) in obj {
                    match val.as_object() {
                        Some(inner) => {
                            for (ik, iv) in inner {
                                rows.push(vec![format!("{k}.{ik}"), s(iv)]);
                            }
                        }
                        None => rows.push(vec![k.clone(), s(val)]),
                    }
                }
            }
            table(&["COUNTER", "VALUE"], &rows)
        }
    })
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
        assert!(t.starts_with("VNI  MAC"), "{t}");
        assert!(t.contains("42   02:00:00:00:00:02  10.0.0.2  learned  3"), "{t}");
        let st = render("stats", r#"{"rx_frames":5,"drops":{"short":2}}"#).unwrap();
        assert!(st.contains("drops.short  2"), "{st}");
        assert!(render("fdb", "not json").is_err());
    }
}
