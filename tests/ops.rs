//! End-to-end tests of operating overlayd (issue 12): logs written to a file, the systemd notification
//! protocol, SIGHUP reloads, and `--print-config` / config errors through the real binary.
//!
//! Same rules as `e2e.rs`: every test builds its own namespaces (deleted on drop, also on failure), traffic
//! only between them, functional deadlines only.

mod common;

use common::overlay::{ctl_json, ctl_socket, ping_ok, OVERLAYCTL, OVERLAYD};
use common::testbed::{run_cmd, wait_until, Daemon, Host, Netns, Testbed};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Spawns `overlayd args…` on `host` (through `env VAR=… ` when `env` is non-empty) and waits (10 s) until its
/// TAP `ovl1` exists and `overlayctl stats` answers.
fn start(host: &Host, env: &[String], args: &[String]) -> Daemon {
    let mut argv: Vec<&str> = env.iter().map(String::as_str).collect();
    argv.push(OVERLAYD);
    argv.extend(args.iter().map(String::as_str));
    let mut d = host.spawn("env", &argv);
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists("ovl1") && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 10 s:\n{}", d.cmdline(), d.log());
    d
}

/// `--admin-socket` and `--state-dir` of this host's own: the namespaces share one filesystem.
fn own_paths(host: &Host) -> Vec<String> {
    vec![
        "--admin-socket".into(),
        host.admin_socket().to_string_lossy().into_owned(),
        "--state-dir".into(),
        host.log_dir()
            .join(format!("state-{}", host.ns()))
            .to_string_lossy()
            .into_owned(),
    ]
}

/// `--local <host> --peer <p>…` plus the host's own admin socket and state dir, plus `extra`.
fn static_args(host: &Host, peers: &[Ipv4Addr], extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--local".to_string(), host.underlay_ip().to_string()];
    a.extend(own_paths(host));
    for p in peers {
        a.push("--peer".into());
        a.push(p.to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// SIGTERM and wait (5 s) for exit 0, so that the log holds the shutdown lines too.
fn stop(mut d: Daemon) -> String {
    d.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    let st = d.wait_timeout(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "overlayd did not exit 0 within 5 s of SIGTERM ({st:?}):\n{}",
        d.log()
    );
    d.log()
}

/// A directory of this test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tb: &Testbed, tag: &str) -> Scratch {
        let d = tb.log_dir().join(format!("{}-{tag}", tb.id()));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_no_escape_codes(log: &str, what: &str) {
    if let Some(pos) = log.find('\u{1b}') {
        panic!(
            "{what}: escape character at byte {pos}: {:?}",
            &log[pos.saturating_sub(40)..(pos + 40).min(log.len())]
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------------------

/// Issue 12 §6: ANSI colour codes ended up in log files. stderr here is a file (the testbed's log).
#[test]
fn log_file_has_no_escape_codes_in_text_or_json() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let d1 = start(h1, &[], &static_args(h1, &[h2.underlay_ip()], &[]));
    let d2 = start(
        h2,
        &[],
        &static_args(h2, &[h1.underlay_ip()], &["--log-format", "json"]),
    );
    ping_ok(tb.container(1), tb.container(2).ip(), 3);

    let text = stop(d1);
    assert!(text.contains("overlayd up") && text.contains("stopped"), "{text}");
    assert!(text.contains("INFO"), "text format has level names:\n{text}");
    assert_no_escape_codes(&text, "text log");

    let json = stop(d2);
    assert_no_escape_codes(&json, "json log");
    let mut messages = Vec::new();
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
        if let Some(m) = v.pointer("/fields/message").and_then(|m| m.as_str()) {
            messages.push(m.to_string());
        }
    }
    for m in ["overlayd up", "stopped"] {
        assert!(messages.iter().any(|x| x == m), "no {m:?} line in:\n{json}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// systemd notification protocol
// ---------------------------------------------------------------------------------------------------------

/// Receives notification datagrams until one contains `want` or `timeout` passes; returns every message seen.
fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> (bool, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return (true, seen);
            }
        }
    }
    (false, seen)
}

/// Issue 12 §4: READY=1 arrives on NOTIFY_SOCKET after the TAP is up (and attached); the watchdog is fed
/// every WATCHDOG_USEC/2; SIGHUP reports RELOADING=1 then READY=1; SIGTERM reports STOPPING=1.
#[test]
fn ready_after_tap_is_up_then_watchdog_reload_and_stopping() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let dir = Scratch::new(&tb, "notify");
    let sock_path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap_or_else(|e| panic!("{}: {e}", sock_path.display()));
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();

    let env = [
        format!("NOTIFY_SOCKET={}", sock_path.display()),
        // 400 ms: WATCHDOG=1 every 200 ms.
        "WATCHDOG_USEC=400000".to_string(),
    ];
    let mut argv: Vec<String> = env.to_vec();
    argv.push(OVERLAYD.into());
    argv.extend(static_args(h1, &[h2.underlay_ip()], &[]));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut d = h1.spawn("env", &argv);

    let (ready, seen) = recv_until(&sock, "READY=1", Duration::from_secs(10));
    assert!(ready, "no READY=1 within 10 s (got {seen:?}):\n{}", d.log());
    // At the moment READY=1 is received, the TAP must already be up and in the bridge.
    let link = h1.run("ip", &["-o", "link", "show", "dev", "ovl1"]);
    assert!(
        link.contains("master ovl0") && (link.contains("state UP") || link.contains(",UP")),
        "READY=1 before the TAP was up and attached: {link}"
    );
    assert!(d.is_running(), "{}", d.log());

    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pings < 3 && Instant::now() < deadline {
        let (hit, _) = recv_until(&sock, "WATCHDOG=1", Duration::from_secs(2));
        pings += usize::from(hit);
    }
    assert!(pings >= 3, "only {pings} WATCHDOG=1 within 5 s:\n{}", d.log());

    d.signal("HUP").unwrap_or_else(|e| panic!("{e}"));
    let (reloading, seen) = recv_until(&sock, "RELOADING=1", Duration::from_secs(5));
    assert!(
        reloading,
        "no RELOADING=1 after SIGHUP (got {seen:?}):\n{}",
        d.log()
    );
    let (ready, seen) = recv_until(&sock, "READY=1", Duration::from_secs(5));
    assert!(ready, "no READY=1 after the reload (got {seen:?}):\n{}", d.log());
    assert!(d.is_running(), "SIGHUP must not stop overlayd:\n{}", d.log());

    d.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    let (stopping, seen) = recv_until(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(
        stopping,
        "no STOPPING=1 after SIGTERM (got {seen:?}):\n{}",
        d.log()
    );
    let st = d.wait_timeout(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "{st:?}:\n{}", d.log());
}

/// Cluster mode: a node joining with a token sends READY=1 only once it holds its credential (the join
/// completed) and its TAP is up; the member it joined through is then in its member list.
#[test]
fn ready_in_cluster_mode_after_the_join() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let dir = Scratch::new(&tb, "notify-cluster");
    let (s1, s2) = (dir.path("state1"), dir.path("state2"));
    let local1 = h1.underlay_ip().to_string();
    let _d1 = start(
        h1,
        &[],
        &[
            "--init-cluster".to_string(),
            "--local".into(),
            local1.clone(),
            "--state-dir".into(),
            s1.to_string_lossy().into_owned(),
            "--admin-socket".into(),
            h1.admin_socket().to_string_lossy().into_owned(),
        ],
    );
    let token = ctl_socket(h1, &["token"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();
    let sock2 = h2.admin_socket().to_string_lossy().into_owned();

    let sock_path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap_or_else(|e| panic!("{}: {e}", sock_path.display()));
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let notify = format!("NOTIFY_SOCKET={}", sock_path.display());
    let s2s = s2.to_string_lossy().into_owned();
    let d2 = h2.spawn(
        "env",
        &[
            &notify,
            OVERLAYD,
            "--peer",
            &local1,
            "--token",
            &token,
            "--state-dir",
            &s2s,
            "--admin-socket",
            &sock2,
        ],
    );
    let (ready, seen) = recv_until(&sock, "READY=1", Duration::from_secs(20));
    assert!(ready, "no READY=1 within 20 s (got {seen:?}):\n{}", d2.log());
    assert!(
        s2.join("node.crt").is_file(),
        "READY=1 before the join gave a credential"
    );
    assert!(h2.link_exists("ovl1"), "READY=1 before the TAP existed");
    let member = wait_until(Duration::from_secs(10), || {
        ctl_json(h2, "peers").to_string().contains(&local1)
    });
    assert!(
        member,
        "host 1 not in host 2's members: {}",
        ctl_json(h2, "peers")
    );
}

// ---------------------------------------------------------------------------------------------------------
// SIGHUP reload
// ---------------------------------------------------------------------------------------------------------

/// Issue 12 §4: "SIGHUP reloads the peer list". Host 1 starts knowing only host 2, so its floods (ARP) never
/// reach host 3 and container 1 cannot reach container 3; a `peer` added to its config file plus SIGHUP fixes
/// that without a restart.
#[test]
fn sighup_adds_a_static_peer_from_the_config_file() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let dir = Scratch::new(&tb, "reload");
    let cfg = dir.path("overlayd.toml");
    let write = |peers: &[&Host]| {
        let list: Vec<String> = peers.iter().map(|h| format!("\"{}\"", h.underlay_ip())).collect();
        let text = format!("local = \"{}\"\npeer = [{}]\n", h1.underlay_ip(), list.join(", "));
        std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
    };
    write(&[h2]);
    let cfg_s = cfg.to_string_lossy().into_owned();
    let mut a1 = vec!["--config".to_string(), cfg_s];
    a1.extend(own_paths(h1));
    let d1 = start(h1, &[], &a1);
    let _d2 = start(
        h2,
        &[],
        &static_args(h2, &[h1.underlay_ip(), h3.underlay_ip()], &[]),
    );
    let _d3 = start(
        h3,
        &[],
        &static_args(h3, &[h1.underlay_ip(), h2.underlay_ip()], &[]),
    );

    let (c1, c3) = (tb.container(1), tb.container(3));
    ping_ok(c1, tb.container(2).ip(), 2);
    let before = c1.ping(c3.ip(), 2);
    assert!(
        before.is_err(),
        "container 1 reached container 3 although host 3 is not a peer of host 1 yet: {before:?}"
    );

    write(&[h2, h3]);
    d1.signal("HUP").unwrap_or_else(|e| panic!("{e}"));
    ping_ok(c1, c3.ip(), 3);
    let peers = ctl_json(h1, "peers").to_string();
    assert!(peers.contains(&h3.underlay_ip().to_string()), "{peers}");
    assert!(d1.log().contains("static peer list replaced"), "{}", d1.log());

    // A config that no longer parses is refused; the running peers stay.
    std::fs::write(&cfg, "peers = []\n").unwrap();
    d1.signal("HUP").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_until(Duration::from_secs(5), || d1.log().contains("reload refused")),
        "{}",
        d1.log()
    );
    assert!(d1.log().contains("line 1: unknown key `peers`"), "{}", d1.log());
    ping_ok(c1, c3.ip(), 2);
}

// ---------------------------------------------------------------------------------------------------------
// --print-config and config errors through the binary
// ---------------------------------------------------------------------------------------------------------

/// `overlayd args…` as user `nobody` (no capabilities): stdout, stderr and exit code.
fn run_as_nobody(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            OVERLAYD,
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run setpriv (apt-get install util-linux): {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 12 §5: `--print-config` needs no root and touches nothing (run as `nobody`, inside a namespace
/// whose links are compared before and after); its output read back with `--config` prints the same; an
/// unknown key exits 2 naming key and line.
#[test]
fn print_config_as_nobody_round_trips_and_unknown_key_names_its_line() {
    let tb = Testbed::builder().hosts(1).containers(false).build();
    let h = tb.host(1);
    let dir = Scratch::new(&tb, "printcfg");
    // `nobody` must be able to read the files.
    run_cmd(Command::new("chmod").args(["0755", &dir.0.to_string_lossy()])).unwrap_or_else(|e| panic!("{e}"));
    let links_before = h.run("ip", &["-o", "link"]);

    let state = dir.path("state");
    let state_s = state.to_string_lossy().into_owned();
    let args = [
        "--peer",
        "10.0.0.2",
        "--vni",
        "77",
        "--bridge",
        "brx",
        "--log-format",
        "json",
        "--state-dir",
        &state_s,
    ];
    // In the host namespace, as nobody.
    let mut argv = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        OVERLAYD,
        "--print-config",
    ];
    argv.extend_from_slice(&args);
    let printed = h.run("setpriv", &argv);
    assert!(
        printed.contains("vni = 77") && printed.contains("log-format = \"json\""),
        "{printed}"
    );
    assert!(
        !h.link_exists("brx") && !h.link_exists("ovl77"),
        "--print-config created links"
    );
    assert_eq!(
        h.run("ip", &["-o", "link"]),
        links_before,
        "--print-config changed the namespace's links"
    );
    assert!(!state.exists(), "--print-config created the state dir");

    let file = dir.path("printed.toml");
    std::fs::write(&file, &printed).unwrap();
    let file_s = file.to_string_lossy().into_owned();
    let (code, again, err) = run_as_nobody(&["--config", &file_s, "--print-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again, printed, "--print-config of the printed file differs");

    let bad = dir.path("bad.toml");
    std::fs::write(&bad, "vni = 5\n# a comment\nfdb_max = 10\n").unwrap();
    let bad_s = bad.to_string_lossy().into_owned();
    let (code, out, err) = run_as_nobody(&["--config", &bad_s, "--print-config"]);
    assert_eq!(code, Some(2), "unknown key must be a usage error: {out}{err}");
    assert!(
        err.contains("line 3") && err.contains("`fdb_max`") && err.contains(bad_s.as_str()),
        "error must name the file, the line and the key: {err}"
    );
    assert!(out.is_empty(), "{out}");
}

// ---------------------------------------------------------------------------------------------------------
// systemd unit
// ---------------------------------------------------------------------------------------------------------

/// `dist/overlayd.service` passes `systemd-analyze verify` (with ExecStart pointed at the binary under test)
/// and declares the protocol the daemon implements.
#[test]
fn systemd_unit_verifies() {
    let unit = include_str!("../dist/overlayd.service");
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE",
        "RestrictNamespaces=net",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/overlayd /run/overlayd -/run/docker/plugins",
        "ExecStart=/usr/local/bin/overlayd --config /etc/overlayd/overlayd.toml",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "dist/overlayd.service lacks `{line}`"
        );
    }
    let tb = Testbed::builder().hosts(1).containers(false).build();
    let dir = Scratch::new(&tb, "unit");
    let path = dir.path("overlayd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/overlayd", OVERLAYD)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", &path.to_string_lossy()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze (apt-get install systemd): {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// The unit's `CapabilityBoundingSet=CAP_NET_ADMIN` is enough: overlayd started as root with every other
/// capability dropped from its bounding set (as systemd does) comes up and forwards.
#[test]
fn runs_with_only_cap_net_admin() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let jail = |h: &Host, peer: &Host| {
        let mut a: Vec<String> = ["--bounding-set=-all,+net_admin", "--no-new-privs", "--", OVERLAYD]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(static_args(h, &[peer.underlay_ip()], &[]));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut d = h.spawn("setpriv", &a);
        let up = wait_until(Duration::from_secs(10), || {
            !d.is_running() || (h.link_exists("ovl1") && h.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
        });
        assert!(
            up && d.is_running(),
            "overlayd with only CAP_NET_ADMIN did not start:\n{}",
            d.log()
        );
        d
    };
    let d1 = jail(h1, h2);
    let _d2 = jail(h2, h1);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d1.pid())).unwrap_or_default();
    let capeff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim);
    assert_eq!(
        capeff,
        Some("0000000000001000"),
        "not running with CAP_NET_ADMIN only"
    );
    ping_ok(tb.container(1), tb.container(2).ip(), 3);
    let log = stop(d1);
    assert!(!log.contains("WARN"), "warnings with CAP_NET_ADMIN only:\n{log}");
}

// ---------------------------------------------------------------------------------------------------------
// First run
// ---------------------------------------------------------------------------------------------------------

/// Examples' nested `cargo build` drops what `cargo run` set for the example (a changed `CARGO_MANIFEST_DIR`
/// reran ring's build script and rebuilt the TLS stack twice per run) but keeps the user's cargo settings.
#[test]
fn examples_nested_build_drops_only_package_variables() {
    use common::testbed::is_inherited_cargo_var;
    for v in [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PKG_NAME",
        "CARGO_PKG_VERSION",
        "OUT_DIR",
    ] {
        assert!(is_inherited_cargo_var(v), "{v}");
    }
    for v in [
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_JOBS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "PATH",
    ] {
        assert!(!is_inherited_cargo_var(v), "{v}");
    }
}

/// Release binaries at most 20 MB (issue 12: they were 55 and 43 MB): the release profile strips DWARF but
/// keeps symbols (for perf). The size itself was measured by hand (README); this guards the setting.
#[test]
fn release_profile_strips_debuginfo_but_keeps_symbols() {
    let manifest: toml::Table = toml::from_str(include_str!("../Cargo.toml")).expect("Cargo.toml parses");
    let release = manifest
        .get("profile")
        .and_then(|p| p.get("release"))
        .unwrap_or_else(|| panic!("Cargo.toml has no [profile.release]"));
    assert_eq!(
        release.get("strip").and_then(|v| v.as_str()),
        Some("debuginfo"),
        "[profile.release] strip must be \"debuginfo\" (not \"symbols\": perf needs the symbol table)"
    );
}
