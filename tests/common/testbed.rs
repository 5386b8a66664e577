//! Network-namespace testbed for the end-to-end tests and the demo.
//!
//! Owns: creating an underlay namespace (a bridge), N "host" namespaces plugged into it by veth, and per host an
//! optional "container" namespace plugged into the host's overlay bridge; running commands and processes inside
//! them; and deleting all of it on `Drop`, also while a test panics.
//! Must never: touch the root namespace's links or addresses, send traffic outside the namespaces it created, or
//! depend on anything but std and the `ip`/`bridge`/`ethtool`/`ping`/`socat`/`kill` commands (`.ci/run` installs them), so
//! that `examples/` can include this file with `#[path = "../tests/common/testbed.rs"] mod testbed;`.
//!
//! Layout (names are unique per testbed, so tests run in parallel):
//! ```text
//!   ovt<id>u   : br0 ── h1, h2, …                 underlay, 10.0.0.0/24, MTU 1500
//!   ovt<id>h<N>: eth0 10.0.0.N ; ovl0 ── vc<N>     host; overlayd or kernel VXLAN also plug into ovl0
//!   ovt<id>c<N>: eth0 10.1.0.N, 02:00:00:00:01:0N, MTU 1450
//! ```
//! With [`TestbedBuilder::ipv6_underlay`], each host's `eth0` also gets `fd00::N/64` (without duplicate address
//! detection, so it is usable at once) and the containers' MTU is 1430 (the IPv6 underlay's 70 bytes of VXLAN
//! overhead). IPv6 stays disabled everywhere else, so the IPv4 testbed is unchanged.
//! Every link is created directly inside its namespace (`ip -n … link add … peer … netns …`), so no name ever
//! exists in the root namespace and interface names stay short.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Inner MTU of a VXLAN overlay on a 1500-byte IPv4 underlay (RFC 7348: 50 bytes of overhead).
pub const OVERLAY_MTU: u32 = 1450;
/// Inner MTU of a VXLAN overlay on a 1500-byte IPv6 underlay (40-byte IPv6 header instead of 20: 70 bytes).
pub const OVERLAY_MTU_V6: u32 = 1430;
/// Underlay MTU.
pub const UNDERLAY_MTU: u32 = 1500;
/// Name of the overlay bridge in every host namespace (overlayd's default `--bridge`).
pub const BRIDGE: &str = "ovl0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------------------

/// A command that failed: what ran, how it ended, and everything it printed.
#[derive(Debug, Clone)]
pub struct CmdError {
    pub cmdline: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// Set when the command could not be started at all.
    pub spawn_error: Option<String>,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.spawn_error {
            return write!(f, "cannot run `{}`: {e}", self.cmdline);
        }
        let status = self
            .status
            .map_or_else(|| "no status".to_string(), |s| s.to_string());
        write!(f, "`{}` failed ({status})", self.cmdline)?;
        if !self.stderr.trim().is_empty() {
            write!(f, "\n  stderr: {}", self.stderr.trim())?;
        }
        if !self.stdout.trim().is_empty() {
            write!(f, "\n  stdout: {}", self.stdout.trim())?;
        }
        Ok(())
    }
}

impl std::error::Error for CmdError {}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; `Ok(stdout)` if it exited 0, otherwise an error holding stdout and stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String, CmdError> {
    let line = cmdline(cmd);
    let out: Output = cmd.stdin(Stdio::null()).output().map_err(|e| CmdError {
        cmdline: line.clone(),
        status: None,
        stdout: String::new(),
        stderr: String::new(),
        spawn_error: Some(e.to_string()),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(CmdError {
            cmdline: line,
            status: Some(out.status),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            spawn_error: None,
        })
    }
}

/// Runs `ip <args>` in the root namespace (only ever with `-n`/`netns` arguments) and panics on failure.
fn ip(args: &[&str]) -> String {
    run_cmd(Command::new("ip").args(args)).unwrap_or_else(|e| panic!("testbed setup: {e}"))
}

/// `ip -n <ns> <args>`, with `args` split at whitespace (names and addresses here never contain any); panics
/// on failure.
fn ipn(ns: &str, args: &str) -> String {
    run_cmd(Command::new("ip").args(["-n", ns]).args(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("testbed setup: {e}"))
}

/// Polls `cond` every 50 ms until it returns true (→ true) or `timeout` passes (→ false, after one last try).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics with a clear message unless we are root and `ip` works: these tests must fail, not skip, when the
/// machine cannot run them.
fn check_prerequisites() {
    let uid = run_cmd(Command::new("id").arg("-u")).map(|s| s.trim().to_string());
    match uid {
        Ok(u) if u == "0" => {}
        Ok(u) => panic!(
            "the netns testbed needs root (uid 0, for `ip netns`), running as uid {u}: run `sudo -E cargo test`"
        ),
        Err(e) => panic!("cannot determine the user id: {e}"),
    }
    if let Err(e) = run_cmd(Command::new("ip").arg("-V")) {
        panic!("the netns testbed needs iproute2 (`ip`): {e}. Install it: apt-get install iproute2");
    }
}

fn unique_id() -> String {
    // pid + per-process counter + per-call random (RandomState is randomly seeded), folded into 5 base-36
    // characters. A collision is still caught: `ip netns add` fails on an existing name and we retry.
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut v = h.finish();
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    for _ in 0..5 {
        s.push(DIGITS[(v % 36) as usize] as char);
        v /= 36;
    }
    s
}

// ---------------------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------------------

/// Anything that is a network namespace: commands and processes run inside it.
pub trait Netns {
    /// The namespace name (as in `ip netns list`).
    fn ns(&self) -> &str;
    /// Directory for this testbed's log files.
    fn log_dir(&self) -> &Path;

    /// `ip netns exec <ns> cmd args…` → stdout, or an error with the exit status, stdout and stderr.
    fn exec(&self, cmd: &str, args: &[&str]) -> Result<String, CmdError> {
        run_cmd(
            Command::new("ip")
                .args(["netns", "exec", self.ns(), cmd])
                .args(args),
        )
    }

    /// Like [`Netns::exec`] but panics with the error (for commands that must work).
    fn run(&self, cmd: &str, args: &[&str]) -> String {
        self.exec(cmd, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a long-running process in the namespace. Its stdout and stderr go to a log file (see
    /// [`Daemon::log`]); it is killed when the returned [`Daemon`] is dropped.
    fn spawn(&self, cmd: &str, args: &[&str]) -> Daemon {
        let base = Path::new(cmd)
            .file_name()
            .map_or(cmd.into(), |n| n.to_string_lossy().into_owned());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log_path = self.log_dir().join(format!("{}-{base}-{n}.log", self.ns()));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create log file {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log file handle: {e}"));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(), cmd]).args(args);
        // DECISIONS: tests run one forwarding worker unless they test workers: overlayd, also started through
        // `env`/`setpriv`/…, gets `--workers 1` unless the test gives `--workers` on its command line (a
        // `workers` key in a --config file is overridden by this flag).
        let is_overlayd = |a: &str| Path::new(a).file_name().is_some_and(|n| n == "overlayd");
        let daemon_args = match is_overlayd(cmd) {
            true => Some(args),
            false => args.iter().position(|a| is_overlayd(a)).map(|i| &args[i + 1..]),
        };
        if let Some(a) = daemon_args {
            let own = |a: &&str| {
                a.starts_with("--workers") || ["--print-config", "--help", "--version"].contains(a)
            };
            if !a.iter().any(own) {
                c.args(["--workers", "1"]);
            }
        }
        let line = cmdline(&c);
        // `ip netns exec` exec()s the command, so the child's pid is the process itself: signals reach it.
        let child = c
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{line}`: {e}"));
        Daemon {
            child: Some(child),
            cmdline: line,
            log_path,
            status: None,
        }
    }

    /// `ping -c count` to `to`; Ok with the counts if at least one reply came back.
    fn ping(&self, to: Ipv4Addr, count: u32) -> Result<PingStats, CmdError> {
        let to = to.to_string();
        let count = count.to_string();
        let out = self.exec("ping", &["-n", "-q", "-c", &count, "-i", "0.2", "-W", "2", &to])?;
        PingStats::parse(&out).ok_or_else(|| CmdError {
            cmdline: format!("ip netns exec {} ping … {to}", self.ns()),
            status: None,
            stdout: out,
            stderr: "cannot parse the ping summary".into(),
            spawn_error: None,
        })
    }

    /// Reads a counter of interface `dev`, e.g. `rx_packets`.
    fn link_stat(&self, dev: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{dev}/statistics/{counter}");
        let s = self.run("cat", &[&path]);
        s.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path} in {}: {e}: {s:?}", self.ns()))
    }

    /// Whether a link of that name exists in this namespace.
    fn link_exists(&self, dev: &str) -> bool {
        run_cmd(Command::new("ip").args(["-n", self.ns(), "link", "show", "dev", dev])).is_ok()
    }
}

/// Summary line of `ping -q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

impl PingStats {
    fn parse(out: &str) -> Option<PingStats> {
        // "5 packets transmitted, 5 received, 0% packet loss, time 803ms"
        let line = out.lines().find(|l| l.contains("packets transmitted"))?;
        let mut nums = line
            .split(',')
            .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
        Some(PingStats {
            transmitted: nums.next()??,
            received: nums.next()??,
        })
    }
}

/// A process running in a namespace; killed (SIGKILL) on drop unless it already exited.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    cmdline: String,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Everything the process printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill(1)`.
    pub fn signal(&self, sig: &str) -> Result<(), CmdError> {
        run_cmd(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.pid().to_string()),
        )
        .map(|_| ())
    }

    /// The exit status if the process has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_wait().is_some());
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                let _ = c.kill();
                self.status = c.wait().ok();
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- last lines of `{}` ----", self.cmdline);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Testbed
// ---------------------------------------------------------------------------------------------------------

/// Who creates the overlay bridge `ovl0` in each host namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeMode {
    /// The testbed creates `ovl0` (up, no STP) and plugs the container's veth into it.
    Testbed,
    /// Left to overlayd (which creates it if missing): call [`Host::attach_container`] once it exists.
    Daemon,
}

#[derive(Debug, Clone)]
pub struct TestbedBuilder {
    hosts: usize,
    containers: bool,
    bridge: BridgeMode,
    ipv6: bool,
}

impl TestbedBuilder {
    /// Whether each host's `eth0` also gets `fd00::N/64` and containers get MTU [`OVERLAY_MTU_V6`] (default
    /// false).
    pub fn ipv6_underlay(mut self, yes: bool) -> Self {
        self.ipv6 = yes;
        self
    }
    /// Number of host namespaces (1..=200).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }
    /// Whether each host gets a container namespace (default true).
    pub fn containers(mut self, yes: bool) -> Self {
        self.containers = yes;
        self
    }
    /// Who creates `ovl0` (default [`BridgeMode::Testbed`]).
    pub fn bridge(mut self, mode: BridgeMode) -> Self {
        self.bridge = mode;
        self
    }

    pub fn build(self) -> Testbed {
        check_prerequisites();
        assert!(
            (1..=200).contains(&self.hosts),
            "hosts must be 1..=200, got {}",
            self.hosts
        );
        // Pick an unused id; `ip netns add` of the underlay is the atomic claim.
        let mut attempt = 0;
        let id = loop {
            let id = unique_id();
            let u = format!("ovt{id}u");
            match run_cmd(Command::new("ip").args(["netns", "add", &u])) {
                Ok(_) => break id,
                Err(e) if attempt < 5 && e.stderr.contains("exists") => attempt += 1,
                Err(e) => panic!("testbed setup: {e}"),
            }
        };
        let log_dir = std::env::temp_dir().join(format!("ovt{id}"));
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));
        // From here on, Drop cleans up whatever was created, even if a step below panics.
        let mut tb = Testbed {
            id: id.clone(),
            underlay: UnderlayNs {
                name: format!("ovt{id}u"),
                log_dir: log_dir.clone(),
            },
            hosts: Vec::new(),
            log_dir,
        };
        let u = tb.underlay.name.clone();
        quiet_ipv6(&u, true);
        ipn(&u, "link set lo up");
        // No MLD snooping: the hosts' neighbour solicitations go to solicited-node groups nobody queries for.
        let snoop = if self.ipv6 { " mcast_snooping 0" } else { "" };
        ipn(&u, &format!("link add br0 type bridge stp_state 0{snoop}"));
        ipn(&u, "link set br0 up");
        for n in 1..=self.hosts {
            tb.hosts
                .push(Host::create(&tb, n, self.containers, self.bridge, self.ipv6));
        }
        tb
    }
}

/// Disables IPv6 (`all` too when `all`) so no router/neighbour solicitations or MLD reports add noise to the
/// counters the tests read. Links created later inherit `default`.
fn quiet_ipv6(ns: &str, all: bool) {
    let mut script = String::from("echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
    if all {
        script.push_str(" && echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6");
    }
    // Without IPv6 support in the kernel these files do not exist and there is no IPv6 noise either.
    if Path::new("/proc/sys/net/ipv6").exists() {
        ip(&["netns", "exec", ns, "sh", "-c", &script]);
    }
}

/// A set of namespaces; everything is deleted on drop.
#[derive(Debug)]
pub struct Testbed {
    id: String,
    underlay: UnderlayNs,
    hosts: Vec<Host>,
    log_dir: PathBuf,
}

/// The underlay namespace (bridge `br0`).
#[derive(Debug)]
pub struct UnderlayNs {
    name: String,
    log_dir: PathBuf,
}

impl Netns for UnderlayNs {
    fn ns(&self) -> &str {
        &self.name
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Testbed {
    pub fn builder() -> TestbedBuilder {
        TestbedBuilder {
            hosts: 2,
            containers: true,
            bridge: BridgeMode::Testbed,
            ipv6: false,
        }
    }

    /// The short unique id in every namespace name.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn underlay(&self) -> &UnderlayNs {
        &self.underlay
    }

    /// Host `n`, 1-based like its addresses (`host(1)` is 10.0.0.1).
    pub fn host(&self, n: usize) -> &Host {
        self.hosts
            .get(n.wrapping_sub(1))
            .unwrap_or_else(|| panic!("no host {n} in this testbed"))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Container of host `n`; panics if the testbed was built without containers.
    pub fn container(&self, n: usize) -> &Container {
        self.host(n).container()
    }

    /// Directory where spawned processes' logs go (removed on drop).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// For interactive programs (the demo): starts a small shell that ignores Ctrl-C and, once this process
    /// has exited by any means (Ctrl-C, SIGTERM, panic = abort), kills what runs in the testbed's namespaces
    /// and deletes them. After a normal exit `Drop` has already done so and the shell finds nothing to do.
    pub fn cleanup_on_exit(&self) {
        let script = r#"trap '' INT TERM HUP
while kill -0 "$0" 2>/dev/null; do sleep 0.3; done
dir="$1"; shift
for n in "$@"; do for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done; done
for n in "$@"; do ip netns del "$n" 2>/dev/null; done
rm -rf "$dir""#;
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .arg(std::process::id().to_string())
            .arg(&self.log_dir);
        for h in &self.hosts {
            if let Some(ct) = &h.container {
                c.arg(&ct.ns);
            }
            c.arg(&h.ns);
        }
        c.arg(&self.underlay.name);
        let spawned = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!(
                "warning: no cleanup watchdog ({e}); after Ctrl-C delete the ovt{}* namespaces",
                self.id
            );
        }
    }

    /// Deletes all namespaces: kills every process in them first (`ip netns pids`), so nothing keeps a
    /// namespace alive. Idempotent; also run by `Drop`.
    pub fn cleanup(&mut self) {
        let mut names: Vec<String> = Vec::new();
        for h in &self.hosts {
            if let Some(c) = &h.container {
                names.push(c.ns.clone());
            }
            names.push(h.ns.clone());
        }
        names.push(self.underlay.name.clone());
        self.hosts.clear();
        for ns in &names {
            kill_all_in(ns);
        }
        for ns in &names {
            if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", ns])) {
                if !e.stderr.contains("No such file") {
                    eprintln!("testbed cleanup: {e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

fn kill_all_in(ns: &str) {
    let pids = run_cmd(Command::new("ip").args(["netns", "pids", ns])).unwrap_or_default();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if pids.is_empty() {
        return;
    }
    let _ = run_cmd(Command::new("kill").arg("-KILL").args(&pids));
    // Wait until they are gone (or 2 s), so deleting the namespace really frees its devices.
    wait_until(Duration::from_secs(2), || {
        run_cmd(Command::new("ip").args(["netns", "pids", ns])).map_or(true, |s| s.trim().is_empty())
    });
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Host and container
// ---------------------------------------------------------------------------------------------------------

/// A host namespace: `eth0` on the underlay, the bridge `ovl0`, optionally a container.
#[derive(Debug)]
pub struct Host {
    index: usize,
    ns: String,
    underlay_ip: Ipv4Addr,
    underlay_ip6: Option<Ipv6Addr>,
    container: Option<Container>,
    log_dir: PathBuf,
}

impl Netns for Host {
    fn ns(&self) -> &str {
        &self.ns
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Host {
    fn create(tb: &Testbed, n: usize, container: bool, bridge: BridgeMode, ipv6: bool) -> Host {
        let u = &tb.underlay.name;
        let ns = format!("ovt{}h{n}", tb.id);
        ip(&["netns", "add", &ns]);
        let underlay_ip = Ipv4Addr::new(10, 0, 0, n as u8);
        // Register before configuring, so a failure below still gets the namespace deleted.
        let mut host = Host {
            index: n,
            ns,
            underlay_ip,
            underlay_ip6: ipv6.then(|| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n as u16)),
            container: None,
            log_dir: tb.log_dir.clone(),
        };
        let h = host.ns.clone();
        quiet_ipv6(&h, false);
        ipn(&h, "link set lo up");
        let m = UNDERLAY_MTU;
        ipn(
            u,
            &format!("link add h{n} mtu {m} type veth peer name eth0 netns {h} mtu {m}"),
        );
        ipn(u, &format!("link set h{n} master br0 up"));
        ipn(&h, &format!("addr add {underlay_ip}/24 dev eth0"));
        if let Some(ip6) = host.underlay_ip6 {
            // eth0 inherited disable_ipv6 from `default` (quiet_ipv6); no router solicitations either.
            let script = "echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations \
                          && echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6";
            if !Path::new("/proc/sys/net/ipv6").exists() {
                panic!("an IPv6 underlay needs a kernel with IPv6 (no /proc/sys/net/ipv6)");
            }
            ip(&["netns", "exec", &h, "sh", "-c", script]);
            ipn(&h, &format!("addr add {ip6}/64 dev eth0 nodad"));
        }
        ipn(&h, "link set eth0 up");
        if bridge == BridgeMode::Testbed {
            ipn(&h, &format!("link add {BRIDGE} type bridge stp_state 0"));
            ipn(&h, &format!("link set {BRIDGE} up"));
        }
        if container {
            let cns = format!("ovt{}c{n}", tb.id);
            ip(&["netns", "add", &cns]);
            let c = Container {
                index: n,
                ns: cns.clone(),
                ip: Ipv4Addr::new(10, 1, 0, n as u8),
                mac: format!("02:00:00:00:01:{n:02x}"),
                log_dir: tb.log_dir.clone(),
            };
            let (ip4, mac) = (c.ip, c.mac.clone());
            host.container = Some(c);
            quiet_ipv6(&cns, true);
            ipn(&cns, "link set lo up");
            let m = if ipv6 { OVERLAY_MTU_V6 } else { OVERLAY_MTU };
            ipn(
                &h,
                &format!("link add vc{n} mtu {m} type veth peer name eth0 netns {cns} mtu {m} address {mac}"),
            );
            ipn(&cns, &format!("addr add {ip4}/24 dev eth0"));
            ipn(&cns, "link set eth0 up");
            ipn(&h, &format!("link set vc{n} up"));
            if bridge == BridgeMode::Testbed {
                host.attach_container(Duration::ZERO);
            }
        }
        host
    }

    /// 1-based index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Path for this host's overlayd admin socket (`--admin-socket`), in the testbed's log dir. Network
    /// namespaces share one filesystem, so every daemon needs its own path, never the default
    /// `/run/overlayd/admin.sock`.
    pub fn admin_socket(&self) -> PathBuf {
        self.log_dir.join(format!("{}-admin.sock", self.ns))
    }

    /// Address on the underlay (10.0.0.N).
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// IPv6 address on the underlay (fd00::N); panics unless the testbed was built with
    /// [`TestbedBuilder::ipv6_underlay`].
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        self.underlay_ip6
            .unwrap_or_else(|| panic!("host {} has no IPv6 underlay address", self.index))
    }

    pub fn container(&self) -> &Container {
        self.container
            .as_ref()
            .unwrap_or_else(|| panic!("host {} has no container", self.index))
    }

    /// Creates `ovl0` (up, no STP) and plugs the container into it: for a host that runs kernel VXLAN in a
    /// testbed built with [`BridgeMode::Daemon`].
    pub fn add_bridge(&self) {
        ipn(&self.ns, &format!("link add {BRIDGE} type bridge stp_state 0"));
        ipn(&self.ns, &format!("link set {BRIDGE} up"));
        if self.container.is_some() {
            self.attach_container(Duration::ZERO);
        }
    }

    /// Plugs the container's veth (`vc<N>`) into `ovl0`, waiting up to `timeout` for the bridge to appear
    /// (for [`BridgeMode::Daemon`], where overlayd creates it).
    pub fn attach_container(&self, timeout: Duration) {
        if !wait_until(timeout, || self.link_exists(BRIDGE)) {
            panic!("bridge {BRIDGE} did not appear in {} within {timeout:?}", self.ns);
        }
        ipn(&self.ns, &format!("link set vc{} master {BRIDGE} up", self.index));
    }

    /// Kernel VXLAN device `vx<VNI>` with learning on, one all-zero FDB entry per peer (head-end replication of
    /// BUM traffic), plugged into `ovl0`, MTU 1450. Returns the device name. The underlay veth keeps its default
    /// offloads: the kernel then sends inner TCP/UDP checksums partial (CHECKSUM_PARTIAL survives a veth) and
    /// TSO superframes as UDP-tunnel GSO packets, as on a virtio underlay; [`Host::kernel_tx_csum_off`] makes
    /// it fill them in like a physical NIC would.
    pub fn add_kernel_vxlan(&self, vni: u32, dstport: u16, peers: &[Ipv4Addr]) -> String {
        let peers: Vec<String> = peers.iter().map(Ipv4Addr::to_string).collect();
        self.kernel_vxlan(vni, dstport, &self.underlay_ip.to_string(), OVERLAY_MTU, &peers)
    }

    /// Like [`Host::add_kernel_vxlan`] over the IPv6 underlay: `local fd00::N`, MTU 1430. The kernel sends UDP
    /// checksums over IPv6 by default (`udp6zerocsumtx` off) and refuses zero-checksum datagrams
    /// (`udp6zerocsumrx` off), as RFC 6935/7348 ask.
    pub fn add_kernel_vxlan6(&self, vni: u32, dstport: u16, peers: &[Ipv6Addr]) -> String {
        let peers: Vec<String> = peers.iter().map(Ipv6Addr::to_string).collect();
        self.kernel_vxlan(
            vni,
            dstport,
            &self.underlay_ip6().to_string(),
            OVERLAY_MTU_V6,
            &peers,
        )
    }

    fn kernel_vxlan(&self, vni: u32, dstport: u16, local: &str, m: u32, peers: &[String]) -> String {
        let dev = format!("vx{vni}");
        let h = &self.ns;
        ipn(
            h,
            &format!("link add {dev} type vxlan id {vni} dstport {dstport} local {local} dev eth0"),
        );
        ipn(h, &format!("link set {dev} mtu {m}"));
        for dst in peers {
            self.run(
                "bridge",
                &["fdb", "append", "00:00:00:00:00:00", "dev", &dev, "dst", dst],
            );
        }
        ipn(h, &format!("link set {dev} master {BRIDGE} up"));
        dev
    }

    /// `ethtool -K eth0 tx off`: the kernel computes every checksum (and segments) in software before the
    /// underlay, so it carries what a physical wire would.
    pub fn kernel_tx_csum_off(&self) {
        if let Err(e) = self.exec("ethtool", &["-K", "eth0", "tx", "off"]) {
            panic!("`ethtool -K eth0 tx off` failed (apt-get install ethtool): {e}");
        }
    }
}

/// A container namespace behind a host's `ovl0`: `eth0` 10.1.0.N/24, MAC 02:00:00:00:01:0N, MTU 1450.
#[derive(Debug)]
pub struct Container {
    index: usize,
    ns: String,
    ip: Ipv4Addr,
    mac: String,
    log_dir: PathBuf,
}

impl Netns for Container {
    fn ns(&self) -> &str {
        &self.ns
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Container {
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// Lower-case, colon-separated, e.g. `02:00:00:00:01:01`.
    pub fn mac(&self) -> &str {
        &self.mac
    }
}

// ---------------------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------------------

fn wait_child(c: &mut Child, deadline: Instant) -> bool {
    wait_until(deadline.saturating_duration_since(Instant::now()), || {
        matches!(c.try_wait(), Ok(Some(_)))
    })
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failing transfer is reproducible.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `mb` MiB of pseudo-random data over TCP from `from` to `to` (port `port`) with `socat`, and checks
/// that exactly the same bytes arrived. Fails if the transfer does not finish within `timeout`.
pub fn tcp_transfer(
    from: &impl Netns,
    to: &Container,
    port: u16,
    mb: usize,
    timeout: Duration,
) -> Result<(), String> {
    let data = pseudo_random_bytes(0x5eed ^ (port as u64) << 32 ^ mb as u64, mb << 20);
    let listen = format!("TCP-LISTEN:{port},reuseaddr");
    let mut rx = Command::new("ip")
        .args(["netns", "exec", to.ns(), "socat", "-u", &listen, "STDOUT"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start socat listener in {}: {e} (apt-get install socat)",
                to.ns()
            )
        })?;
    let mut rx_out = rx.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = rx_out.read_to_end(&mut buf);
        (buf, r)
    });
    // The client retries the connection until the listener is up (socat `retry`), instead of a sleep.
    let connect = format!("TCP:{}:{port},retry=100,interval=0.1", to.ip());
    let mut tx = Command::new("ip")
        .args(["netns", "exec", from.ns(), "socat", "-u", "STDIN", &connect])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start socat sender in {}: {e}", from.ns()))?;
    let mut tx_in = tx.stdin.take().ok_or("no stdin pipe")?;
    let writer = std::thread::spawn(move || {
        let r = tx_in.write_all(&data);
        drop(tx_in); // EOF → socat closes the connection
        (data, r)
    });
    let deadline = Instant::now() + timeout;
    let tx_done = wait_child(&mut tx, deadline);
    let rx_done = tx_done && wait_child(&mut rx, deadline);
    if !(tx_done && rx_done) {
        let _ = tx.kill();
        let _ = rx.kill();
    }
    let tx_out = tx.wait_with_output().map_err(|e| e.to_string())?;
    let rx_status = rx.wait().map_err(|e| e.to_string())?;
    let mut rx_err = String::new();
    if let Some(mut e) = rx.stderr.take() {
        let _ = e.read_to_string(&mut rx_err);
    }
    let (data, wr) = writer.join().map_err(|_| "writer thread panicked")?;
    let (got, rr) = reader.join().map_err(|_| "reader thread panicked")?;
    let what = format!("TCP {mb} MiB {} → {}:{port}", from.ns(), to.ip());
    if !(tx_done && rx_done) {
        return Err(format!(
            "{what}: not finished within {timeout:?} ({} of {} bytes arrived); sender stderr: {}; receiver \
             stderr: {}",
            got.len(),
            data.len(),
            String::from_utf8_lossy(&tx_out.stderr).trim(),
            rx_err.trim()
        ));
    }
    if !tx_out.status.success() || !rx_status.success() || wr.is_err() || rr.is_err() {
        return Err(format!(
            "{what}: sender {} ({:?}) stderr: {}; receiver {rx_status} ({rr:?}) stderr: {}",
            tx_out.status,
            wr.err(),
            String::from_utf8_lossy(&tx_out.stderr).trim(),
            rx_err.trim()
        ));
    }
    if got.len() != data.len() {
        return Err(format!(
            "{what}: received {} bytes, sent {}",
            got.len(),
            data.len()
        ));
    }
    if let Some(i) = got.iter().zip(&data).position(|(a, b)| a != b) {
        return Err(format!("{what}: data differs at byte {i} of {}", data.len()));
    }
    Ok(())
}

/// Variables `cargo run` sets for the program it runs that describe *this* package. A nested `cargo build`
/// must not inherit them: build scripts (ring's) track e.g. `CARGO_MANIFEST_DIR` with `rerun-if-env-changed`,
/// so a value that differs from a plain `cargo build` reruns them and rebuilds ring, rustls, quinn, rcgen and
/// the workspace — on every example run, and again on the next plain build (issue 12 §8).
pub fn is_inherited_cargo_var(name: &str) -> bool {
    const PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_"];
    const NAMES: &[&str] = &[
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// For examples: builds `overlayd` and `overlayctl` with the same cargo and profile as the running example
/// (`$CARGO build --manifest-path … [--release]`, a no-op of about a second when nothing changed) and returns
/// the directory holding them. Progress goes to stderr, so `--json` output on stdout stays parseable.
pub fn build_binaries() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    // <target>/<profile>/examples/<name> → <target>/<profile>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| format!("unexpected executable location {}", exe.display()))?
        .to_path_buf();
    let mut cmd = Command::new(&cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_inherited_cargo_var) {
            cmd.env_remove(&name);
        }
    }
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    cmd.args(["build", "--manifest-path", manifest]);
    cmd.args(["--bin", "overlayd", "--bin", "overlayctl"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("• building overlayd and overlayctl ({})", dir.display());
    let st = cmd.status().map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !st.success() {
        return Err(format!("`{cargo} build` failed ({st})"));
    }
    for b in ["overlayd", "overlayctl"] {
        if !dir.join(b).is_file() {
            return Err(format!("{} was not built", dir.join(b).display()));
        }
    }
    Ok(dir)
}
