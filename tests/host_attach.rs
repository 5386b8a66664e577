//! Container attach and egress (issue 10 §3, §6) against real namespaces: `overlayd::attach`,
//! `overlayd::host` and `overlayd::egress` as a library, run on a thread inside a testbed host namespace
//! (the daemon's namespace in production), attaching other namespaces created here.
//!
//! Each test builds its own `Testbed` (unique names; everything deleted on drop, also on panic) with one
//! host and no container; the "containers" are extra namespaces named after the testbed id, deleted by
//! their own guards. Traffic only flows between namespaces created here.
//!
//! One test binary; the tests live in `tests/host_attach/`: an attachment's life (`lifecycle.rs`), egress
//! (`egress.rs`), and addresses from the IPAM blocks (`allocation.rs`). The namespaces, the helpers to run
//! code in them and the link queries they share are here.

#[path = "common/testbed.rs"]
mod testbed;

#[path = "host_attach/allocation.rs"]
mod allocation;
#[path = "host_attach/egress.rs"]
mod egress;
#[path = "host_attach/lifecycle.rs"]
mod lifecycle;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use overlayd::attach::{AttachSpec, Attachment};
use overlayd::host::NetnsRef;
use overlayd::privileges;
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use testbed::{run_cmd, wait_until, Netns as _, Testbed};

/// An extra namespace (a "container"), deleted on drop with everything running in it.
struct Ns {
    name: String,
    log_dir: PathBuf,
}

impl Ns {
    fn new(tb: &Testbed, tag: &str) -> Ns {
        let name = format!("ovt{}{tag}", tb.id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]))
            .unwrap_or_else(|e| panic!("apt-get install iproute2: {e}"));
        let ns = Ns {
            name,
            log_dir: tb.log_dir().to_owned(),
        };
        ns.run("ip", &["link", "set", "lo", "up"]);
        ns
    }
    fn netns_ref(&self) -> NetnsRef {
        NetnsRef::Name(self.name.clone())
    }
    fn delete(&self) {
        if let Ok(p) = run_cmd(Command::new("ip").args(["netns", "pids", &self.name])) {
            for pid in p.split_whitespace() {
                let _ = run_cmd(Command::new("kill").args(["-KILL", pid]));
            }
        }
        let _ = run_cmd(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

impl testbed::Netns for Ns {
    fn ns(&self) -> &str {
        &self.name
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A process alone in a fresh network namespace (`unshare -n sleep`), killed on drop.
struct Proc(Child);

impl Proc {
    fn new() -> Proc {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare (apt-get install util-linux): {e}"));
        let p = Proc(child);
        let pid = p.pid();
        let me = std::fs::read_link("/proc/self/ns/net").ok();
        assert!(
            wait_until(Duration::from_secs(5), || {
                std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != me
            }),
            "unshare -n did not enter a new namespace"
        );
        p
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    /// `nsenter --net=/proc/PID/ns/net cmd args`.
    fn exec(&self, cmd: &str, args: &[&str]) -> String {
        run_cmd(
            Command::new("nsenter")
                .arg(format!("--net=/proc/{}/ns/net", self.pid()))
                .arg(cmd)
                .args(args),
        )
        .unwrap_or_else(|e| panic!("(nsenter: apt-get install util-linux) {e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `f` on a thread inside namespace `ns` (as the daemon runs in its own), propagating panics.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open the host namespace {ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::os::fd::AsFd;
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("setns: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Run `f` on a new thread (in the caller's namespace) with only the capabilities the daemon keeps, as
/// after its start-up drop. Commands run from the caller's thread keep theirs (ping needs CAP_NET_RAW).
fn with_daemon_caps<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            privileges::drop_all_but(privileges::needed(&[4789, 7948]))
                .unwrap_or_else(|e| panic!("drop capabilities: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A testbed of one host and no container: the tests make their own namespaces ([`Ns`], [`Proc`]).
fn single_host() -> Testbed {
    Testbed::builder().hosts(1).containers(false).build()
}

fn state_dir(tb: &Testbed, tag: &str) -> PathBuf {
    let d = tb.log_dir().join(format!("state-{tag}"));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    d
}

fn add_bridge(h: &impl testbed::Netns, name: &str) {
    h.run("ip", &["link", "add", name, "type", "bridge", "stp_state", "0"]);
    h.run("ip", &["link", "set", name, "up"]);
}

fn spec(netns: NetnsRef, ip: &str, ifname: &str) -> AttachSpec {
    AttachSpec {
        netns,
        network: "blue".into(),
        bridge: "ovbr10".into(),
        mtu: 1400,
        ip: Some(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"))),
        mac: None,
        ifname: ifname.into(),
        gateway: None,
    }
}

/// `ip -d link show` of the host end: exists, is up, MTU and master.
fn host_end(h: &impl testbed::Netns, a: &Attachment) -> Option<String> {
    h.exec("ip", &["-o", "-d", "link", "show", "dev", &a.host_ifname])
        .ok()
}

fn ovv_links(h: &impl testbed::Netns) -> Vec<String> {
    h.run("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("ovv"))
        .collect()
}

fn bridge_ports(h: &impl testbed::Netns, br: &str) -> String {
    h.run("ip", &["-o", "link", "show", "master", br])
}

fn ping(from: &impl testbed::Netns, to: &str) -> bool {
    from.exec("ping", &["-n", "-q", "-c", "1", "-W", "1", to]).is_ok()
}

fn ping_within(from: &impl testbed::Netns, to: &str) -> bool {
    wait_until(Duration::from_secs(5), || ping(from, to))
}
