//! Demo: two hosts, one overlay, containers that ping each other through overlayd.
//!
//! `cargo run --release --example demo` (as root). Builds `overlayd` and `overlayctl`, creates a throw-away
//! set of network namespaces (two "hosts" on a shared underlay, one "container" behind each), starts
//! overlayd on both hosts, pings across, shows the learned forwarding table and the counters, and deletes
//! everything again — also if a step fails (Drop) or on Ctrl-C (a watchdog shell). Touches nothing outside the namespaces it creates.

#[path = "../tests/common/testbed.rs"]
mod testbed;

use std::process::ExitCode;
use std::time::Duration;
use testbed::{wait_until, Host, Netns, Testbed};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(what: &str) {
    println!("\n• {what}");
}

fn run() -> Result<(), String> {
    let bin = testbed::build_binaries()?;
    let overlayd = bin.join("overlayd").to_string_lossy().into_owned();
    let overlayctl = bin.join("overlayctl").to_string_lossy().into_owned();

    step("creating two hosts on an underlay network, with one container behind each");
    let tb = Testbed::builder().hosts(2).build();
    tb.cleanup_on_exit(); // Ctrl-C kills this process before Drop runs: a watchdog cleans up then
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (c1, c2) = (tb.container(1), tb.container(2));
    for h in [h1, h2] {
        let c = h.container();
        println!(
            "  host {} (netns {}): underlay {}; container netns {}: {} / {}",
            h.index(),
            h.ns(),
            h.underlay_ip(),
            c.ns(),
            c.ip(),
            c.mac()
        );
    }
    let p = c1.ping(c2.ip(), 1).map(|p| p.received).unwrap_or(0);
    println!(
        "  before overlayd: container 1 → {} ping replies: {p} (no overlay yet)",
        c2.ip()
    );

    step("starting overlayd on both hosts (VNI 1, UDP 4789), each with the other as --peer");
    let start = |h: &Host, peer: &Host| {
        let (local, peer) = (h.underlay_ip().to_string(), peer.underlay_ip().to_string());
        // Both "hosts" share this machine's filesystem: each daemon gets its own admin socket and state dir
        // (and its lock).
        let sock = h.admin_socket().to_string_lossy().into_owned();
        let state = h
            .log_dir()
            .join(format!("state-h{}", h.index()))
            .display()
            .to_string();
        println!(
            "  host {}: overlayd --peer {peer} --local {local} --admin-socket {sock} --state-dir {state}",
            h.index()
        );
        h.spawn(
            &overlayd,
            &[
                "--peer",
                &peer,
                "--local",
                &local,
                "--admin-socket",
                &sock,
                "--state-dir",
                &state,
            ],
        )
    };
    let mut d1 = start(h1, h2);
    let mut d2 = start(h2, h1);
    for (h, d) in [(h1, &mut d1), (h2, &mut d2)] {
        let up = wait_until(Duration::from_secs(10), || {
            !d.is_running() || (h.link_exists("ovl1") && h.exec(&overlayctl, &["stats"]).is_ok())
        });
        if !up || !d.is_running() {
            return Err(format!(
                "overlayd on host {} did not come up:\n{}",
                h.index(),
                d.log()
            ));
        }
    }
    println!("  both up: TAP ovl1 attached to bridge ovl0 on each host");

    step(&format!("pinging container 2 ({}) from container 1", c2.ip()));
    wait_until(Duration::from_secs(10), || c1.ping(c2.ip(), 1).is_ok());
    let p = c1.ping(c2.ip(), 5).map_err(|e| e.to_string())?;
    println!("  {} of {} replies", p.received, p.transmitted);
    if p.received == 0 {
        return Err("no ping replies across the overlay".into());
    }

    step("host 1: overlayctl fdb (which MAC lives behind which VTEP)");
    print!(
        "{}",
        indent(&h1.exec(&overlayctl, &["fdb"]).map_err(|e| e.to_string())?)
    );
    step("host 1: overlayctl stats");
    print!(
        "{}",
        indent(&h1.exec(&overlayctl, &["stats"]).map_err(|e| e.to_string())?)
    );

    println!(
        "\nWhat happened: container 1's ARP request for {} left through host 1's bridge into overlayd's TAP; \
         overlayd wrapped it in VXLAN (UDP 4789) and flooded it to its peer {}. overlayd on host 2 unwrapped it, \
         learned container 1's MAC ({}) behind VTEP {}, and delivered it to container 2. The reply went back \
         unicast the same way, so host 1 learned {} behind {} — the FDB above. The pings then flowed as \
         unicast VXLAN datagrams, counted in the stats.",
        c2.ip(),
        h2.underlay_ip(),
        c1.mac(),
        h1.underlay_ip(),
        c2.mac(),
        h2.underlay_ip()
    );

    step("cleaning up: stopping overlayd (SIGTERM) and deleting the namespaces");
    for (h, d) in [(h1, &mut d1), (h2, &mut d2)] {
        let _ = d.signal("TERM");
        match d.wait_timeout(Duration::from_secs(5)) {
            Some(st) => println!("  host {}: overlayd exited ({st})", h.index()),
            None => println!(
                "  host {}: overlayd did not exit within 5 s; killing it",
                h.index()
            ),
        }
    }
    drop(tb);
    println!("  done");
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
