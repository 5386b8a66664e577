//! `overlayd-cni` driven exactly as a container runtime drives a CNI plugin: environment `CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`, the network configuration on stdin, the result or
//! error object on stdout and the exit status.
//!
//! The admin API side is played by a scripted server on a Unix socket that answers as CONTRACT.md specifies
//! (`POST /v1/attach`, `POST /v1/detach`, `GET /v1/attachments`) and records what the plugin sent.
//!
//! The end-to-end case against real cluster-mode overlayds on two hosts is tests/cni_e2e.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_overlayd-cni");

/// Run the plugin: `(exit code, stdout parsed as JSON or Null when empty)`.
fn cni_with_env(env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut c = Command::new(BIN);
    c.env_clear();
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    // A plugin may exit without reading stdin (runtimes ignore the broken pipe too).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}"))
    };
    (out.status.code().unwrap_or(-1), v)
}

fn cni(command: &str, netns: &str, conf: &Value) -> (i32, Value) {
    cni_with_env(
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c0ffee42"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ],
        &conf.to_string(),
    )
}

fn conf(socket: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "overlay", "type": "overlayd-cni", "network": "app",
           "socket": socket.display().to_string()})
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovcni-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Handler = Box<dyn Fn(&str, &str, &Value) -> (u16, Value) + Send>;

/// A scripted admin API: `handler(method, path, body) -> (status, body)`; records every request.
struct FakeAdmin {
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl FakeAdmin {
    fn start(socket: &Path, handler: Handler) -> FakeAdmin {
        let l = UnixListener::bind(socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rec = requests.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, mut body) = loop {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (
                            String::from_utf8_lossy(&buf[..p]).to_string(),
                            buf[p + 4..].to_vec(),
                        );
                    }
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while body.len() < len {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (
                    first.next().unwrap_or("").to_string(),
                    first.next().unwrap_or("").to_string(),
                );
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, reply) = handler(&method, &path, &body);
                rec.lock().unwrap().push((method, path, body));
                let reply = reply.to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        FakeAdmin { requests }
    }

    fn requests(&self) -> Vec<(String, String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

fn attachment(netns: &str) -> Value {
    json!({"network": "app", "netns": netns, "ifname": "eth0", "host_ifname": "ovh1234", "mac": "02:aa:00:00:00:05",
           "ip": "10.20.0.69/16", "gateway": "10.20.0.1", "mtu": 1450})
}

#[test]
fn version_is_answered_without_a_daemon() {
    let env = [("CNI_COMMAND", "VERSION")];
    let (code, v) = cni_with_env(&env, r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0")),
        "{v}"
    );
    let (code, v) = cni_with_env(&env, "");
    assert_eq!(code, 0, "{v}");
    assert!(v["supportedVersions"].is_array());
}

#[test]
fn malformed_input_gets_cni_errors() {
    let dir = scratch("malformed");
    let sock = dir.join("admin.sock");
    let netns = dir.join("ns");
    std::fs::write(&netns, "").unwrap();
    let netns = netns.display().to_string();
    let check = |code: i32, v: &Value, want: u64| {
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["code"], want, "{v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["cniVersion"].is_string(), "{v}");
    };
    // Not JSON, truncated, wrong type, missing network, unsupported version.
    let (c, v) = cni_with_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
        ],
        "{not json",
    );
    check(c, &v, 6);
    let text = conf(&sock).to_string();
    let (c, v) = cni_with_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
        ],
        &text[..text.len() / 2],
    );
    check(c, &v, 6);
    let mut bad = conf(&sock);
    bad["type"] = json!("bridge");
    let (c, v) = cni("ADD", &netns, &bad);
    check(c, &v, 7);
    let mut bad = conf(&sock);
    bad.as_object_mut().unwrap().remove("network");
    let (c, v) = cni("ADD", &netns, &bad);
    check(c, &v, 7);
    let mut bad = conf(&sock);
    bad["cniVersion"] = json!("0.2.0");
    let (c, v) = cni("ADD", &netns, &bad);
    check(c, &v, 1);
    // Environment: no command, unknown command, bad interface name.
    let (c, v) = cni_with_env(&[], &conf(&sock).to_string());
    check(c, &v, 4);
    let (c, v) = cni("FROB", &netns, &conf(&sock));
    check(c, &v, 4);
    let (c, v) = cni_with_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "a/b"),
        ],
        &conf(&sock).to_string(),
    );
    check(c, &v, 4);
    // A namespace that does not exist.
    let (c, v) = cni("ADD", "/nonexistent/netns", &conf(&sock));
    check(c, &v, 3);
    // No daemon behind the socket: try again later (ADD and DEL: the address could not be released).
    let (c, v) = cni("ADD", &netns, &conf(&sock));
    check(c, &v, 11);
    let (c, v) = cni("DEL", &netns, &conf(&sock));
    check(c, &v, 11);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn add_check_del_against_the_admin_api() {
    let dir = scratch("flow");
    let sock = dir.join("admin.sock");
    let netns_path = dir.join("pod1");
    std::fs::write(&netns_path, "").unwrap();
    let netns = netns_path.display().to_string();
    let attached: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let state = attached.clone();
    let admin = FakeAdmin::start(
        &sock,
        Box::new(move |method, path, body| {
            let mut st = state.lock().unwrap();
            match (method, path) {
                ("POST", "/v1/attach") => {
                    let ns = body["netns"].as_str().unwrap_or_default().to_string();
                    let a = attachment(&ns);
                    st.insert(ns, a.clone());
                    (200, a)
                }
                ("POST", "/v1/detach") => {
                    let ns = body["netns"].as_str().unwrap_or_default();
                    (200, json!({"detached": st.remove(ns).is_some()}))
                }
                ("GET", "/v1/attachments") => (200, Value::Array(st.values().cloned().collect())),
                _ => (404, json!({"error": "no such route"})),
            }
        }),
    );

    // ADD: the request and the CNI result.
    let (code, result) = cni("ADD", &netns, &conf(&sock));
    assert_eq!(code, 0, "{result}");
    let reqs = admin.requests();
    assert_eq!(reqs[0].0, "POST");
    assert_eq!(reqs[0].1, "/v1/attach");
    assert_eq!(
        reqs[0].2,
        json!({"netns": netns, "network": "app", "ifname": "eth0"})
    );
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], "ovh1234");
    assert_eq!(
        result["interfaces"][1],
        json!({"name": "eth0", "mac": "02:aa:00:00:00:05", "sandbox": netns, "mtu": 1450})
    );
    assert_eq!(
        result["ips"],
        json!([{"address": "10.20.0.69/16", "gateway": "10.20.0.1", "interface": 1}])
    );
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.20.0.1"}]));

    // CHECK with the prevResult a runtime passes.
    let mut with_prev = conf(&sock);
    with_prev["prevResult"] = result.clone();
    let (code, out) = cni("CHECK", &netns, &with_prev);
    assert_eq!((code, out.clone()), (0, Value::Null), "{out}");
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.20.0.70/16");
    let (code, out) = cni("CHECK", &netns, &wrong);
    assert_eq!(code, 1, "{out}");

    // DEL twice: both succeed with no output.
    for _ in 0..2 {
        let (code, out) = cni("DEL", &netns, &with_prev);
        assert_eq!((code, out.clone()), (0, Value::Null), "{out}");
    }
    assert!(attached.lock().unwrap().is_empty());
    // CHECK after DEL: not attached (container unknown).
    let (code, out) = cni("CHECK", &netns, &with_prev);
    assert_eq!((code, out["code"].clone()), (1, json!(3)), "{out}");
    // DEL after the namespace is gone, and with no CNI_NETNS at all.
    std::fs::remove_file(&netns_path).unwrap();
    let (code, out) = cni("DEL", &netns, &conf(&sock));
    assert_eq!(code, 0, "{out}");
    let (code, out) = cni_with_env(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c0ffee42"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf(&sock).to_string(),
    );
    assert_eq!(code, 0, "{out}");
    let n = admin.requests().iter().filter(|r| r.1 == "/v1/detach").count();
    assert_eq!(n, 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn del_tolerates_a_removed_network_and_gone_namespace_but_not_other_errors() {
    let dir = scratch("del");
    let sock = dir.join("admin.sock");
    let netns_path = dir.join("pod");
    std::fs::write(&netns_path, "").unwrap();
    let netns = netns_path.display().to_string();
    let status = Arc::new(Mutex::new(404u16));
    let s2 = status.clone();
    let _admin = FakeAdmin::start(
        &sock,
        Box::new(move |_, _, _| (*s2.lock().unwrap(), json!({"error": "scripted refusal"}))),
    );
    // 404: the network was removed; nothing left to detach.
    let (code, out) = cni("DEL", &netns, &conf(&sock));
    assert_eq!(code, 0, "{out}");
    // 400 while the namespace exists: a real error.
    *status.lock().unwrap() = 400;
    let (code, out) = cni("DEL", &netns, &conf(&sock));
    assert_eq!((code, out["code"].clone()), (1, json!(7)), "{out}");
    assert!(
        out["details"].as_str().unwrap().contains("scripted refusal"),
        "{out}"
    );
    // 400 once the namespace is gone: done.
    std::fs::remove_file(&netns_path).unwrap();
    let (code, out) = cni("DEL", &netns, &conf(&sock));
    assert_eq!(code, 0, "{out}");
    // 503 (no admitter): try again later; ADD's malformed answers are I/O errors.
    *status.lock().unwrap() = 503;
    let (code, out) = cni("DEL", &netns, &conf(&sock));
    assert_eq!((code, out["code"].clone()), (1, json!(11)), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
