//! End-to-end proof of the operator tools (issue 12): `/metrics` scraped during real traffic parses as
//! Prometheus text and moves with it; `overlayctl peers` shows static peers' VTEP, last datagram and state;
//! `overlayctl trace` for learned, local, control-plane and unknown destinations; `overlayctl diag` passes on a
//! healthy testbed and names the peer and port when an nftables rule drops UDP 4789 on one host, and the
//! interface when a container's veth has the wrong MTU.
//! Must never: assert timings (deadlines are functional and generous: the test machine is heavily loaded), or
//! send traffic outside the testbed's namespaces.
//!
//! One test binary; the tests live in `tests/observe/`: the Prometheus text checker and `scrape`
//! (`exposition.rs`), static mode (`static_mode.rs`), `overlayctl diag` (`diagnostics.rs`), cluster mode
//! (`cluster_mode.rs`). Starting overlayd and running `diag` are here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "observe/cluster_mode.rs"]
mod cluster_mode;
#[path = "observe/diagnostics.rs"]
mod diagnostics;
#[path = "observe/exposition.rs"]
mod exposition;
#[path = "observe/static_mode.rs"]
mod static_mode;

use common::overlay::{spawn_overlayd, OVERLAYCTL};
use common::testbed::{wait_until, CmdError, Daemon, Host, Netns};
use std::net::Ipv4Addr;
use std::time::Duration;

const READY: Duration = Duration::from_secs(30);

/// Starts overlayd on `host` and waits until its admin endpoint answers.
fn start(host: &Host, args: &[&str]) -> Daemon {
    let mut d = spawn_overlayd(host, args);
    let ready = wait_until(READY, || {
        !d.is_running() || host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok()
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(
        ready,
        "`{}` not ready within {READY:?}:\n{}",
        d.cmdline(),
        d.log()
    );
    d
}

/// Static mode: `--peer` every address of `peers`, `--local` our own.
fn start_static(host: &Host, peers: &[Ipv4Addr]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    args.extend(["--local".to_string(), host.underlay_ip().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(host, &args)
}

/// `overlayctl diag` on `host`: Ok with its output when every check passes.
fn diag(host: &Host) -> Result<String, CmdError> {
    host.exec(OVERLAYCTL, &["diag"])
}
