//! Faults around the host devices (issue 9 §1, §2, §5, §7): a TAP or bridge lost under a running overlayd,
//! which bridge survives its exit, a SIGKILL and restart during a TCP transfer, and one daemon per state dir.
//!
//! Real overlayd processes in namespace testbeds (tests/common/testbed.rs); every deadline is functional.
//! Measured values (time to notice, outage) are printed, run with `--nocapture` to see them.
//!
//! One test binary; the faults live in `tests/devices/`: lost devices (`lost_devices.rs`), bridge ownership
//! (`bridge_ownership.rs`), crash and restart (`crash_restart.rs`), one daemon per state dir
//! (`state_dir_lock.rs`). The helpers they share (starting overlayd, reading links and logs) are here.

mod common;

#[path = "devices/bridge_ownership.rs"]
mod bridge_ownership;
#[path = "devices/crash_restart.rs"]
mod crash_restart;
#[path = "devices/lost_devices.rs"]
mod lost_devices;
#[path = "devices/state_dir_lock.rs"]
mod state_dir_lock;

use common::overlay::{spawn_overlayd, OVERLAYCTL};
use common::testbed::{wait_until, Daemon, Host, Netns};
use std::time::{Duration, Instant};

const TAP: &str = "ovl1";

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn state_dir(host: &Host) -> String {
    host.log_dir()
        .join(format!("state-{}", host.ns()))
        .display()
        .to_string()
}

fn args(host: &Host, peer: &Host) -> Vec<String> {
    vec![
        "--peer".into(),
        peer.underlay_ip().to_string(),
        "--local".into(),
        host.underlay_ip().to_string(),
        "--state-dir".into(),
        state_dir(host),
    ]
}

/// Starts overlayd on `host` (static, `peer` as its peer) and waits until its TAP exists and it answers.
fn start(host: &Host, peer: &Host) -> Daemon {
    let a = args(host, peer);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut d = spawn_overlayd(host, &a);
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists(TAP) && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 10 s:\n{}", d.cmdline(), d.log());
    d
}

/// [`start`] on `h1` (peer `h2`), then on `h2` (peer `h1`).
fn start_pair(h1: &Host, h2: &Host) -> (Daemon, Daemon) {
    let d1 = start(h1, h2);
    let d2 = start(h2, h1);
    (d1, d2)
}

/// `ip -o link show dev <dev>` in `host`, or None if there is no such link.
fn link(host: &Host, dev: &str) -> Option<String> {
    host.exec("ip", &["-o", "link", "show", "dev", dev]).ok()
}

/// Administratively up (the UP flag inside `<…>`).
fn is_up(host: &Host, dev: &str) -> bool {
    link(host, dev).is_some_and(|l| {
        l.split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
    })
}

fn master(host: &Host, dev: &str) -> Option<String> {
    let l = link(host, dev)?;
    let mut words = l.split_whitespace();
    words.find(|w| *w == "master")?;
    words.next().map(str::to_owned)
}

fn mtu(host: &Host, dev: &str) -> Option<u32> {
    let l = link(host, dev)?;
    let mut words = l.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log().lines().filter(|l| l.contains(needle)).count()
}

/// Time from `since` until `needle` shows up in the daemon's log (polled every 50 ms), if within `timeout`.
fn wait_log(d: &Daemon, needle: &str, since: Instant, timeout: Duration) -> Option<Duration> {
    wait_until(timeout, || log_count(d, needle) > 0).then(|| since.elapsed())
}
