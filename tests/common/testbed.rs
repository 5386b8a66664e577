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

// `#[path]`, not plain `mod`: examples include this file by path, and a child module must resolve to
// `testbed/…` the same way from there as from `tests/common/mod.rs`.
#[path = "testbed/cargo.rs"]
mod cargo;
#[path = "testbed/cmd.rs"]
mod cmd;
#[path = "testbed/hosts.rs"]
mod hosts;
#[path = "testbed/netns.rs"]
mod netns;
#[path = "testbed/traffic.rs"]
mod traffic;

// Each test crate and example uses a different part of the testbed (what `dead_code` allows for items).
#[allow(unused_imports)]
pub use cargo::{build_binaries, is_inherited_cargo_var};
#[allow(unused_imports)]
pub use cmd::{run_cmd, wait_until, CmdError};
#[allow(unused_imports)]
pub use hosts::{Container, Host};
#[allow(unused_imports)]
pub use netns::{Daemon, Netns, PingStats};
#[allow(unused_imports)]
pub use traffic::{pseudo_random_bytes, tcp_transfer};

use cmd::{check_prerequisites, ip, ipn};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Inner MTU of a VXLAN overlay on a 1500-byte IPv4 underlay (RFC 7348: 50 bytes of overhead).
pub const OVERLAY_MTU: u32 = 1450;
/// Inner MTU of a VXLAN overlay on a 1500-byte IPv6 underlay (40-byte IPv6 header instead of 20: 70 bytes).
pub const OVERLAY_MTU_V6: u32 = 1430;
/// Underlay MTU.
pub const UNDERLAY_MTU: u32 = 1500;
/// Name of the overlay bridge in every host namespace (overlayd's default `--bridge`).
pub const BRIDGE: &str = "ovl0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

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
