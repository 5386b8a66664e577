//! End-to-end proof that secrets stay with root (issue 8 §2): real overlayd processes in network namespaces.
//!
//! Owns: the join token is served only on the root-only admin socket, never on the TCP admin address, not to
//! an unprivileged user (`runuser -u nobody`) on either listener, even when the socket file is made
//! world-writable (SO_PEERCRED); a joiner using `--token-file` has no secret on its command line; one admin
//! socket path per live daemon (the second is refused naming the first's pid), stale sockets are replaced,
//! and the socket is removed on exit.
//! Must never: use the default socket path /run/overlayd/admin.sock (every daemon gets its own under the
//! testbed's log dir), or send traffic outside the testbed's namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_json, ctl_socket, spawn_overlayd, start_overlayd, OVERLAYCTL};
use common::testbed::{wait_until, CmdError, Host, Netns, Testbed};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// Fails (never skips) when a command the test needs is missing, naming the Debian package.
fn need(host: &Host, tool: &str, package: &str) {
    if host.exec("sh", &["-c", &format!("command -v {tool}")]).is_err() {
        panic!("this test needs `{tool}`: apt-get install {package}");
    }
}

fn state_dir(tb: &Testbed, host: &Host) -> String {
    tb.log_dir()
        .join(format!("state-h{}", host.index()))
        .to_string_lossy()
        .into_owned()
}

/// `runuser -u nobody -- cmd args…` in the host's namespace.
fn as_nobody(host: &Host, cmd: &str, args: &[&str]) -> Result<String, CmdError> {
    let mut v = vec!["-u", "nobody", "--", cmd];
    v.extend_from_slice(args);
    host.exec("runuser", &v)
}

/// `curl` of the TCP admin address with `host_header` and `extra` header; returns (HTTP status, body).
fn curl_with(host: &Host, nobody: bool, path: &str, host_header: &str, extra: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:7947{path}");
    let hh = format!("Host: {host_header}");
    let args = [
        "-sS",
        "-m",
        "5",
        "-H",
        &hh,
        "-H",
        extra,
        "-w",
        "\n%{http_code}",
        &url,
    ];
    let out = if nobody {
        as_nobody(host, "curl", &args)
    } else {
        host.exec("curl", &args)
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (
        code.parse()
            .unwrap_or_else(|_| panic!("no HTTP status from curl: {out:?}")),
        body.to_string(),
    )
}

fn curl(host: &Host, nobody: bool, path: &str, host_header: &str) -> (u16, String) {
    curl_with(host, nobody, path, host_header, "X-Test: 1")
}

fn failure(r: Result<String, CmdError>, what: &str) -> CmdError {
    match r {
        Ok(out) => panic!("{what}: succeeded, printed {out:?}"),
        Err(e) => e,
    }
}

#[test]
fn token_only_for_root_on_the_admin_socket() {
    let tb = Testbed::builder().hosts(1).containers(false).build();
    let h = tb.host(1);
    need(h, "runuser", "util-linux");
    need(h, "curl", "curl");
    need(h, "ps", "procps");
    let local = h.underlay_ip().to_string();
    let _d = start_overlayd(
        h,
        &[
            "--init-cluster",
            "--local",
            &local,
            "--state-dir",
            &state_dir(&tb, h),
        ],
    );
    let sock = h.admin_socket();
    let sock_s = sock.to_string_lossy().into_owned();
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "{sock_s} is not a socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "admin socket mode");

    // Root over the socket gets the token.
    let token = ctl_socket(h, &["token"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();
    assert!(token.starts_with("OVL1-"), "{token:?}");
    let secret = token.rsplit('-').next().unwrap().to_string();
    let leaks = |s: &str| s.contains(&token) || s.contains(&secret);

    // overlayctl without --admin-socket says what to do, exit 2, even as root.
    let e = failure(h.exec(OVERLAYCTL, &["token"]), "overlayctl token over TCP");
    assert_eq!(e.status.and_then(|s| s.code()), Some(2), "{e}");
    assert!(
        e.stderr.contains("--admin-socket /run/overlayd/admin.sock"),
        "{e}"
    );

    // The TCP endpoint never serves it, to root or nobody; the refusal names the socket.
    for nobody in [false, true] {
        let (code, body) = curl(h, nobody, "/v1/token", "127.0.0.1:7947");
        eprintln!("TCP /v1/token (nobody: {nobody}): {code} {body}");
        assert_eq!(code, 403, "{body}");
        assert!(body.contains(&sock_s), "refusal does not name the socket: {body}");
        assert!(!leaks(&body), "token leaked over TCP");
    }
    // Read-only data stays available to unprivileged users over TCP …
    let (code, body) = curl(h, true, "/v1/stats", "localhost:7947");
    assert_eq!(code, 200, "{body}");
    as_nobody(h, OVERLAYCTL, &["peers", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    // … but not to a page that reached 127.0.0.1 through DNS rebinding (foreign Host header).
    let (code, body) = curl(h, true, "/v1/stats", "attacker.example:7947");
    assert_eq!(code, 403, "{body}");
    // Request heads beyond 8 KiB are refused.
    let big = format!("X-Big: {}", "a".repeat(10_000));
    let (code, body) = curl_with(h, true, "/v1/stats", "localhost", &big);
    assert_eq!(code, 431, "{body}");

    // nobody on the socket: the file mode stops the connection.
    let e = failure(
        as_nobody(h, OVERLAYCTL, &["--admin-socket", &sock_s, "token"]),
        "nobody on the admin socket",
    );
    eprintln!("nobody, socket 0600: {}", e.stderr.trim());
    assert!(e.stderr.contains("permission denied"), "{e}");
    assert!(!leaks(&e.stdout) && !leaks(&e.stderr));
    // Even with the file made world-writable, SO_PEERCRED refuses uid 65534.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    for cmd in ["token", "stats"] {
        let e = failure(
            as_nobody(h, OVERLAYCTL, &["--admin-socket", &sock_s, cmd]),
            "nobody on a world-writable admin socket",
        );
        eprintln!("nobody, socket 0666, {cmd}: {}", e.stderr.trim());
        assert!(
            e.stderr.contains("HTTP 403") && e.stderr.contains("uid 65534"),
            "{e}"
        );
        assert!(!leaks(&e.stdout) && !leaks(&e.stderr));
    }
    // Root still gets it.
    assert_eq!(ctl_socket(h, &["token"]).unwrap().trim(), token);
}

#[test]
fn token_file_keeps_the_secret_off_the_command_line() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let l1 = h1.underlay_ip().to_string();
    let _d1 = start_overlayd(
        h1,
        &[
            "--init-cluster",
            "--local",
            &l1,
            "--state-dir",
            &state_dir(&tb, h1),
        ],
    );
    let token = ctl_socket(h1, &["token"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();
    let secret = token.rsplit('-').next().unwrap().to_string();
    let file = tb.log_dir().join("join.token");
    let file_s = file.to_string_lossy().into_owned();
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let join_args = [
        "--peer",
        &l1,
        "--token-file",
        &file_s,
        "--state-dir",
        &state_dir(&tb, h2),
    ];

    // A token file others may read is refused (exit 2), naming the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut d = spawn_overlayd(h2, &join_args);
    let st = d.wait_timeout(Duration::from_secs(10));
    assert_eq!(st.and_then(|s| s.code()), Some(2), "{}", d.log());
    assert!(d.log().contains("chmod 600"), "{}", d.log());

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d2 = start_overlayd(h2, &join_args);
    let joined = wait_until(Duration::from_secs(20), || {
        let p = ctl_json(h1, "peers");
        p.as_array()
            .map_or(0, |r| r.iter().filter(|m| m["state"] == "alive").count())
            == 2
    });
    assert!(
        joined,
        "host 2 did not join: {}\n{}",
        ctl_json(h1, "peers"),
        d2.log()
    );

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d2.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    eprintln!("joiner's /proc/PID/cmdline: {cmdline}");
    assert!(
        cmdline.contains("--token-file"),
        "not the joiner's cmdline: {cmdline}"
    );
    assert!(
        !cmdline.contains(&secret),
        "secret in the joiner's cmdline: {cmdline}"
    );
    let ps = h2.run("ps", &["-eo", "pid,args", "ww"]);
    assert!(ps.contains(&file_s), "joiner not in ps output:\n{ps}");
    assert!(!ps.contains(&secret), "secret in `ps` output:\n{ps}");
}

#[test]
fn one_live_daemon_per_admin_socket_and_stale_ones_are_replaced() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (l1, l2) = (h1.underlay_ip().to_string(), h2.underlay_ip().to_string());
    let sock = h1.admin_socket();
    let sock_s = sock.to_string_lossy().into_owned();
    let mut a = start_overlayd(h1, &["--peer", &l2, "--local", &l1, "--admin-socket", &sock_s]);

    // Static mode: `token` gets a clear sentence, not JSON.
    let e = failure(ctl_socket(h1, &["token"]), "token on a static-mode daemon");
    assert_eq!(e.status.and_then(|s| s.code()), Some(1), "{e}");
    assert!(e.stderr.contains("static mode") && !e.stderr.contains('{'), "{e}");

    // A second daemon (another namespace, same path) is refused and names the first one's pid.
    let mut b = spawn_overlayd(h2, &["--peer", &l1, "--local", &l2, "--admin-socket", &sock_s]);
    let st = b.wait_timeout(Duration::from_secs(10));
    eprintln!("second daemon on {sock_s}: {st:?}\n{}", b.log());
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{}", b.log());
    assert!(b.log().contains(&format!("pid {}", a.pid())), "{}", b.log());
    assert!(a.is_running());
    let peers = ctl_socket(h1, &["peers", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        peers.contains(&l2),
        "the socket must still reach the first daemon: {peers}"
    );

    // SIGKILL leaves the socket file behind; the next daemon replaces the stale socket.
    a.kill();
    assert!(Path::new(&sock).exists(), "socket file gone after SIGKILL?");
    let mut c = start_overlayd(h2, &["--peer", &l1, "--local", &l2, "--admin-socket", &sock_s]);
    assert!(c.log().contains("stale admin socket"), "{}", c.log());
    let peers = ctl_socket(h1, &["peers", "--json"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        peers.contains(&l1),
        "the socket must now reach the new daemon: {peers}"
    );

    // A clean exit removes it.
    c.signal("TERM").unwrap();
    let st = c.wait_timeout(Duration::from_secs(5));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", c.log());
    assert!(
        !Path::new(&sock).exists(),
        "admin socket left behind after SIGTERM"
    );
}
