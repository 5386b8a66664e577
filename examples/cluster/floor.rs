//! `--static-floor`: the same N hosts, containers and watchers as a cluster run, but every daemon in static
//! mode (`--peer` = the next host's VTEP; no control plane, no join, no TLS), and all N launched together
//! (a cluster run starts host 1 first and the other N - 1 together once its token is ready). What it
//! measures, per node from its daemon's start: until its admin endpoint answers, and until its own
//! container's MAC is `local` (seen behind its bridge); and the CPU time the N daemons used until the last
//! was up (`/proc/PID/task/*/schedstat`). That is what N daemons starting at once cost this machine before
//! any control-plane work: a floor under the cluster run's *joined* and *MAC known everywhere* figures.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::report::{pct, secs};
use crate::testbed::{wait_until, Daemon, Host, Netns};
use crate::unix_us;
use crate::watch::{first_time, local_log, watch_log};

pub(crate) struct Launch<'a> {
    pub(crate) hosts: &'a [&'a Host],
    pub(crate) overlayd: &'a str,
    pub(crate) state: &'a [String],
    pub(crate) sockets: &'a [String],
    pub(crate) macs: &'a [String],
    pub(crate) watchers: &'a [Daemon],
}

pub(crate) fn run(l: &Launch, json: bool) -> Result<(), String> {
    let n = l.hosts.len();
    let mut starts = Vec::with_capacity(n);
    let mut daemons = Vec::new();
    for i in 0..n {
        let peer = l.hosts[(i + 1) % n].underlay_ip().to_string();
        starts.push(unix_us());
        daemons.push(l.hosts[i].spawn(
            l.overlayd,
            &[
                "--peer",
                &peer,
                "--state-dir",
                &l.state[i],
                "--admin-socket",
                &l.sockets[i],
            ],
        ));
    }
    let own =
        |i: usize| move |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(|s| s.contains(&l.macs[i]));
    let up = wait_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(20));
        let all = (0..n).all(|i| first_time(&local_log(&l.watchers[i]), starts[i], own(i)).is_some());
        // A daemon that exited (a bad `--overlayd`, a flag it does not know) ends the wait at once.
        all || daemons.iter_mut().any(|d| !d.is_running())
    });
    let cpu_s: f64 = daemons.iter().map(|d| cpu_seconds(d.pid())).sum();
    let running: Vec<bool> = daemons.iter_mut().map(Daemon::is_running).collect();
    if !up || running.contains(&false) {
        let down: Vec<String> = (0..n)
            .filter(|&i| first_time(&local_log(&l.watchers[i]), starts[i], own(i)).is_none() || !running[i])
            .map(|i| format!("host {}: {}", i + 1, daemons[i].log()))
            .collect();
        return Err(format!(
            "static daemons exited or not up within 60 s:\n{}",
            down.join("\n")
        ));
    }
    let mut admin_up = Vec::new();
    let mut own_local = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let a = first_time(&watch_log(&l.watchers[i]), start, Option::is_some).unwrap_or(u64::MAX);
        let m = first_time(&local_log(&l.watchers[i]), start, own(i)).unwrap_or(u64::MAX);
        admin_up.push(secs(a.saturating_sub(start)));
        own_local.push(secs(m.saturating_sub(start)));
    }
    admin_up.sort_by(f64::total_cmp);
    own_local.sort_by(f64::total_cmp);
    let spread = secs(starts.last().copied().unwrap_or(0).saturating_sub(starts[0]));
    let s = |v: &[f64]| serde_json::json!({"p50": pct(v, 50.0), "p99": pct(v, 99.0), "max": pct(v, 100.0), "samples": v});
    if json {
        let v: Value = serde_json::json!({
            "nodes": n,
            "mode": "static-floor",
            "static_admin_up_per_node_s": s(&admin_up),
            "static_own_mac_local_per_node_s": s(&own_local),
            "launch_spread_s": spread,
            "daemons_cpu_s_until_all_up": cpu_s,
        });
        println!("{v}");
    } else {
        let ms = |v: &[f64], p: f64| format!("{:.0} ms", pct(v, p) * 1e3);
        println!("overlayd static mode (no control plane), N = {n} daemons started at once");
        println!("{:<52} {:>8} {:>8} {:>8}", "metric", "p50", "p99", "max");
        for (name, v) in [
            ("admin up, per node (from its start)", &admin_up),
            ("own container's MAC local, per node (from its start)", &own_local),
        ] {
            println!(
                "{name:<52} {:>8} {:>8} {:>8}",
                ms(v, 50.0),
                ms(v, 99.0),
                ms(v, 100.0)
            );
        }
    }
    drop(daemons);
    Ok(())
}

/// CPU time of process `pid`'s live threads (`/proc/PID/task/*/schedstat`: nanoseconds on a CPU first).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}
