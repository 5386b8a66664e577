//! Cluster-mode figures: N namespaced hosts form a cluster through one member, then we measure how the gossip
//! control plane behaves.
//!
//! `cargo run --release --example cluster -- --nodes N [--json] [--overlayd PATH]` (as root). Builds
//! `overlayd`/`overlayctl` (`--overlayd`: run that overlayd binary instead, for A/B comparisons),
//! creates N hosts with one container each (the testbed of `tests/common/testbed.rs`), starts host 1 with
//! `--init-cluster`, all others at once with `--peer <host 1> --token <token>`, and prints:
//! - time from each node's daemon start until its FDB holds every other container's MAC with origin `control`
//!   (p50/p99/max over nodes), and until that is true on every node (from the joiners' launch);
//! - per container MAC, from its first appearance on its bridge (the first time its own node lists it as
//!   `local`) until every other node holds it as `control`;
//! - once the cluster is formed and idle: a new MAC behind every host's bridge (a macvlan with its own MAC
//!   in each container, sending broadcast pings), per MAC from just before the commands that create it
//!   until every other node holds it;
//! - time until every other node has dropped a SIGKILLed node's MAC;
//! - time until that node, restarted with its state dir and no token, answers a container ping from host 1;
//! - gossip bytes/s per node: `eth0` TX bytes of each host over an idle 10 s window (no container traffic;
//!   the only other underlay traffic is the odd ARP refresh, tens of bytes).
//!
//! `--static-floor`: the same testbed and launch with every daemon in static mode, measuring only their
//! start-up (`floor.rs`).
//!
//! How a container's MAC gets known: the control plane advertises the MACs seen behind a node's bridge, so each
//! container emits a broadcast ping (`ping -b -i 0.2 10.1.0.255`, no replies: Linux ignores broadcast echo)
//! from before its daemon starts until the cluster is formed; its first frame after the TAP is attached makes
//! the MAC local. That adds up to 0.2 s to the formation time.
//!
//! How we observe it without perturbing it: this same executable, run as `--watch` inside each host namespace,
//! follows the local admin endpoint's FDB change stream (`GET /v1/fdb/watch`, each change stamped by the
//! daemon when it happened) and prints a timestamped line whenever the set of control (or local) MACs
//! changes; the figures come from those lines. Against an overlayd without the stream (`--overlayd` of an
//! older build) it polls `GET /v1/fdb` every 25 ms (50 ms above 16 nodes) instead; the output says which
//! (`observe`). Touches nothing outside its namespaces.

mod floor;
mod report;
#[path = "../../tests/common/testbed.rs"]
mod testbed;
mod watch;

use report::{secs, table, to_json, Figures};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testbed::{wait_until, Daemon, Host, Netns, Testbed};
use watch::{first_time, local_log, watch, watch_log};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--watch") {
        return watch(&args[1..]);
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "{e}\nusage: cargo run --release --example cluster -- --nodes N [--json] [--overlayd PATH] [--static-floor]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ncluster example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Opts {
    nodes: usize,
    json: bool,
    /// Run this overlayd binary instead of the one built from this tree (A/B comparisons).
    overlayd: Option<String>,
    /// Start every daemon in static mode instead and measure only their start-up (`floor.rs`).
    static_floor: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            nodes: 8,
            json: false,
            overlayd: None,
            static_floor: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--nodes" => {
                    let v = it.next().ok_or("--nodes needs a number")?;
                    o.nodes = v.parse().map_err(|e| format!("--nodes {v}: {e}"))?;
                    if !(2..=200).contains(&o.nodes) {
                        return Err(format!("--nodes must be 2..=200, got {}", o.nodes));
                    }
                }
                "--json" => o.json = true,
                "--static-floor" => o.static_floor = true,
                "--overlayd" => o.overlayd = Some(it.next().ok_or("--overlayd needs a path")?.clone()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(o)
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn eth0_tx(h: &Host) -> Result<(Instant, u64), String> {
    let s = h
        .exec("cat", &["/sys/class/net/eth0/statistics/tx_bytes"])
        .map_err(|e| e.to_string())?;
    let v = s.trim().parse().map_err(|e| format!("tx_bytes {s:?}: {e}"))?;
    Ok((Instant::now(), v))
}

fn run(o: &Opts) -> Result<(), String> {
    let n = o.nodes;
    let say = |s: &str| {
        if !o.json {
            eprintln!("• {s}");
        }
    };
    let bin = testbed::build_binaries()?;
    let overlayd = match &o.overlayd {
        Some(p) => p.clone(),
        None => bin.join("overlayd").to_string_lossy().into_owned(),
    };
    let overlayctl = bin.join("overlayctl").to_string_lossy().into_owned();
    let me = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .to_string_lossy()
        .into_owned();
    let poll_ms: u64 = if n > 16 { 50 } else { 25 };

    say(&format!("creating {n} hosts with one container each"));
    let tb = Testbed::builder().hosts(n).build();
    tb.cleanup_on_exit();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let macs: Vec<String> = hosts
        .iter()
        .map(|h| h.container().mac().to_ascii_lowercase())
        .collect();
    let state: Vec<String> = hosts
        .iter()
        .map(|h| {
            tb.log_dir()
                .join(format!("state-h{}", h.index()))
                .to_string_lossy()
                .into_owned()
        })
        .collect();

    let poll = poll_ms.to_string();
    let watchers: Vec<Daemon> = hosts
        .iter()
        .map(|h| h.spawn(&me, &["--watch", "127.0.0.1:7947", &poll]))
        .collect();
    let mut emitters: Vec<Daemon> = hosts
        .iter()
        .map(|h| {
            h.container()
                .spawn("ping", &["-b", "-n", "-q", "-i", "0.2", "10.1.0.255"])
        })
        .collect();

    let local1 = hosts[0].underlay_ip().to_string();
    // Every daemon gets its own admin socket (the namespaces share one filesystem).
    let sockets: Vec<String> = hosts
        .iter()
        .map(|h| h.admin_socket().to_string_lossy().into_owned())
        .collect();
    if o.static_floor {
        say(&format!(
            "hosts 1..{n}: overlayd --peer <next host> (static mode, all at once)"
        ));
        let launch = floor::Launch {
            hosts: &hosts,
            overlayd: &overlayd,
            state: &state,
            sockets: &sockets,
            macs: &macs,
            watchers: &watchers,
        };
        return floor::run(&launch, o.json);
    }
    say("host 1: overlayd --init-cluster");
    let mut starts = vec![0u64; n];
    starts[0] = unix_us();
    let mut daemons: Vec<Daemon> = vec![hosts[0].spawn(
        &overlayd,
        &[
            "--init-cluster",
            "--local",
            &local1,
            "--state-dir",
            &state[0],
            "--admin-socket",
            &sockets[0],
        ],
    )];
    let mut token = String::new();
    let up = wait_until(Duration::from_secs(20), || {
        match hosts[0].exec(&overlayctl, &["--admin-socket", &sockets[0], "token"]) {
            Ok(t) => {
                token = t.trim().to_string();
                true
            }
            Err(_) => !daemons[0].is_running(),
        }
    });
    if !up || token.is_empty() {
        return Err(format!("host 1 did not come up:\n{}", daemons[0].log()));
    }

    say(&format!(
        "hosts 2..{n}: overlayd --peer {local1} --token … (all at once)"
    ));
    let launch = unix_us();
    for i in 1..n {
        starts[i] = unix_us();
        daemons.push(hosts[i].spawn(
            &overlayd,
            &[
                "--peer",
                &local1,
                "--token",
                &token,
                "--state-dir",
                &state[i],
                "--admin-socket",
                &sockets[i],
            ],
        ));
    }
    let others = |i: usize| -> BTreeSet<String> {
        macs.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| m.clone())
            .collect()
    };
    let knows_all =
        |i: usize, s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(|s| s.is_superset(&others(i)));
    let formed = wait_until(Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(200));
        (0..n).all(|i| watch_log(&watchers[i]).iter().any(|(_, s)| knows_all(i, s)))
    });
    if !formed {
        let mut msg = String::from("not every node knew every MAC within 120 s:\n");
        for i in 0..n {
            let last = watch_log(&watchers[i])
                .last()
                .map(|(_, s)| s.as_ref().map_or(0, BTreeSet::len));
            msg += &format!(
                "  host {}: {last:?} control MACs, daemon running: {}\n",
                i + 1,
                daemons[i].is_running()
            );
        }
        for (i, d) in daemons.iter_mut().enumerate() {
            if !d.is_running() {
                msg += &format!("  host {} log:\n{}\n", i + 1, d.log());
            }
        }
        return Err(msg);
    }
    let mut known_per_node = Vec::new();
    let mut joined_per_node = Vec::new();
    let mut known_last = 0;
    let mut last_join = 0;
    for i in 0..n {
        // The admin endpoint opens once the join is done and the TAP is on the bridge.
        let up = first_time(&watch_log(&watchers[i]), starts[i], Option::is_some).unwrap_or(u64::MAX);
        joined_per_node.push(secs(up.saturating_sub(starts[i])));
        last_join = last_join.max(up);
        let t = first_time(&watch_log(&watchers[i]), starts[i], |s| knows_all(i, s)).unwrap_or(u64::MAX);
        known_per_node.push(secs(t.saturating_sub(starts[i])));
        known_last = known_last.max(t);
    }
    // The same from each MAC's first appearance on its bridge: the first time its own node listed it as
    // `local` (seen behind the bridge), until the last other node held it as `control`.
    let mut known_from_appearance = Vec::new();
    for i in 0..n {
        let has = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(|s| s.contains(&macs[i]));
        let Some(appeared) = first_time(&local_log(&watchers[i]), starts[i], has) else {
            continue;
        };
        let everywhere = (0..n)
            .filter(|j| *j != i)
            .map(|j| first_time(&watch_log(&watchers[j]), 0, has).unwrap_or(u64::MAX))
            .max()
            .unwrap_or(appeared);
        known_from_appearance.push(secs(everywhere.saturating_sub(appeared)));
        if std::env::var_os("CLUSTER_TIMELINE").is_some() {
            // Where a MAC's time went: its node's start, admin up and first sighting, and the last
            // node to learn it (with that node's start), all relative to the joiners' launch.
            let rel = |t: u64| t.saturating_sub(launch) as f64 / 1e3;
            let (last, at) = (0..n)
                .filter(|j| *j != i)
                .map(|j| {
                    (
                        j,
                        first_time(&watch_log(&watchers[j]), 0, has).unwrap_or(u64::MAX),
                    )
                })
                .max_by_key(|(_, t)| *t)
                .unwrap_or((i, appeared));
            let up = first_time(&watch_log(&watchers[i]), starts[i], Option::is_some).unwrap_or(0);
            // When the last node first held any other node's MAC: late means it was cut off, not slow.
            let first_any = first_time(&watch_log(&watchers[last]), 0, |s| {
                s.as_ref().is_some_and(|s| !s.is_empty())
            })
            .unwrap_or(0);
            eprintln!(
                "host {:2}: start {:6.0} up {:6.0} MAC seen {:6.0} everywhere {:6.0} ms; last host {:2} (start {:6.0}, first control MAC {:6.0})",
                i + 1,
                rel(starts[i]),
                rel(up),
                rel(appeared),
                rel(at),
                last + 1,
                rel(starts[last]),
                rel(first_any)
            );
        }
    }
    known_from_appearance.sort_by(f64::total_cmp);
    if std::env::var_os("CLUSTER_STATS").is_some() {
        // What formation cost each node's gossip endpoint: dials, failed dials (then a 1 s back-off
        // during which messages to that peer are dropped), handshakes served, sync traffic deferred.
        let keys = [
            ("quic", "dials"),
            ("quic", "dial_failures"),
            ("quic", "dial_ms_total"),
            ("quic", "dial_ms_max"),
            ("quic", "sends_dropped_backoff"),
            ("quic", "dial_lost_packets"),
            ("quic", "handshakes"),
            ("quic", "handshake_failures"),
            ("quic", "retries"),
            ("control", "hellos_sent"),
            ("control", "sync_deferred"),
            ("control", "sync_messages_sent"),
        ];
        for (i, h) in hosts.iter().enumerate() {
            let Ok(out) = h.exec(&overlayctl, &["--admin-socket", &sockets[i], "stats", "--json"]) else {
                continue;
            };
            let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let mut row: Vec<String> = keys
                .iter()
                .map(|(a, b)| format!("{b}={}", v[a][b].as_u64().map_or("-".into(), |x| x.to_string())))
                .collect();
            // Datagrams the host's kernel dropped for a full socket receive buffer (QUIC then waits for a
            // retransmission timer): on the gossip port (7948) and on all other UDP sockets (VXLAN), from
            // the `drops` column of the namespace's /proc/net/udp.
            if let Ok(out) = h.exec("cat", &["/proc/net/udp"]) {
                let (mut gossip, mut other) = (0u64, 0u64);
                for line in out.lines().skip(1) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let port = f
                        .get(1)
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    let drops = f.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
                    match port {
                        Some(7948) => gossip += drops,
                        _ => other += drops,
                    }
                }
                row.push(format!("gossip_rcvbuf_drops={gossip} other_udp_drops={other}"));
            }
            eprintln!("host {:2} stats: {}", i + 1, row.join(" "));
        }
    }
    // CLUSTER_LOGS=DIR keeps each daemon's log (the testbed's log dir is deleted at the end), with the
    // joiners' launch time, for lining up timestamps (run the daemons with RUST_LOG for more).
    if let Some(dir) = std::env::var_os("CLUSTER_LOGS") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("launch_unix_us"), launch.to_string());
        for (i, d) in daemons.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("h{}.log", i + 1)), d.log());
        }
    }
    let known_everywhere = secs(known_last.saturating_sub(launch));
    // Separates the control plane's dissemination from the cost of N-1 simultaneous joins through host 1.
    let known_after_last_join = secs(known_last.saturating_sub(last_join));
    known_per_node.sort_by(f64::total_cmp);
    joined_per_node.sort_by(f64::total_cmp);
    emitters.clear(); // stop the broadcast pings: from here on the overlay is idle

    say("idle 10 s: measuring gossip bytes on every host's eth0");
    std::thread::sleep(Duration::from_secs(2));
    let before = hosts.iter().map(|h| eth0_tx(h)).collect::<Result<Vec<_>, _>>()?;
    std::thread::sleep(Duration::from_secs(10));
    let after = hosts.iter().map(|h| eth0_tx(h)).collect::<Result<Vec<_>, _>>()?;
    let mut gossip_bps: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|((t0, b0), (t1, b1))| b1.saturating_sub(*b0) as f64 / (*t1 - *t0).as_secs_f64())
        .collect();
    gossip_bps.sort_by(f64::total_cmp);

    say("a new MAC behind every host's bridge (a macvlan in each container)");
    let new_macs: Vec<String> = (0..n)
        .map(|i| format!("02:00:00:ee:{:02x}:{:02x}", i >> 8, i & 0xff))
        .collect();
    let mut appeared = vec![0u64; n];
    let mut new_emitters = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        // The macvlan's first frames (its IPv6 link-up traffic if enabled, then the broadcast pings)
        // leave right after the link comes up; the time is taken before the commands even start, so
        // the figure includes their start-up.
        let script = format!(
            "ip link add link eth0 name nm0 address {} type macvlan mode bridge && \
             ip addr add 10.2.{}.{}/16 dev nm0 && ip link set nm0 up && \
             exec ping -b -n -q -c 10 -i 0.2 -I nm0 10.2.255.255",
            new_macs[i],
            i / 250,
            i % 250 + 1
        );
        appeared[i] = unix_us();
        new_emitters.push(h.container().spawn("sh", &["-c", &script]));
    }
    let new_known = |i: usize| -> Option<u64> {
        let has = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(|s| s.contains(&new_macs[i]));
        (0..n)
            .filter(|j| *j != i)
            .map(|j| first_time(&watch_log(&watchers[j]), appeared[i], has))
            .try_fold(0, |m, t| t.map(|t| m.max(t)))
    };
    let spread = wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(200));
        (0..n).all(|i| new_known(i).is_some())
    });
    if !spread {
        return Err("the new MACs did not reach every node within 30 s".into());
    }
    let mut new_mac_known: Vec<f64> = (0..n)
        .map(|i| secs(new_known(i).unwrap_or(u64::MAX).saturating_sub(appeared[i])))
        .collect();
    new_mac_known.sort_by(f64::total_cmp);
    // Where that time goes, per MAC: the commands until its owner's FDB holds it as local (first frame on
    // the TAP), then until the first other node and the last one install it.
    let mut new_mac_steps = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..n {
        let has = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(|s| s.contains(&new_macs[i]));
        let local = first_time(&local_log(&watchers[i]), appeared[i], has);
        let installs: Option<Vec<u64>> = (0..n)
            .filter(|j| *j != i)
            .map(|j| first_time(&watch_log(&watchers[j]), appeared[i], has))
            .collect();
        if let (Some(l), Some(t)) = (local, installs) {
            let first = t.iter().copied().min().unwrap_or(l);
            let last = t.iter().copied().max().unwrap_or(l);
            new_mac_steps[0].push(secs(l.saturating_sub(appeared[i])));
            new_mac_steps[1].push(secs(first.saturating_sub(l)));
            new_mac_steps[2].push(secs(last.saturating_sub(l)));
        }
    }
    for v in &mut new_mac_steps {
        v.sort_by(f64::total_cmp);
    }
    drop(new_emitters);

    let v = n - 1; // the victim: not host 1, through which everyone joined
    say(&format!("kill -9 overlayd on host {}", v + 1));
    let killed = unix_us();
    daemons[v].kill();
    let gone = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(|s| !s.contains(&macs[v]));
    let withdrawn = wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(100));
        (0..n)
            .filter(|i| *i != v)
            .all(|i| first_time(&watch_log(&watchers[i]), killed, gone).is_some())
    });
    if !withdrawn {
        return Err(format!(
            "host {}'s MAC not withdrawn everywhere within 30 s",
            v + 1
        ));
    }
    let mut withdraw_per_node: Vec<f64> = (0..n)
        .filter(|i| *i != v)
        .map(|i| {
            let t = first_time(&watch_log(&watchers[i]), killed, gone).unwrap_or(u64::MAX);
            secs(t.saturating_sub(killed))
        })
        .collect();
    withdraw_per_node.sort_by(f64::total_cmp);

    say(&format!(
        "restart host {} (same state dir, no token); ping it from container 1",
        v + 1
    ));
    let target = hosts[v].container().ip().to_string();
    // Static neighbour entries both ways, so the figure is the overlay's, not the containers' ARP retry timer
    // (1 s: an ARP request sent before the node is back would otherwise be retried only a second later).
    let (c1, cv) = (hosts[0].container(), hosts[v].container());
    for (a, b) in [(c1, cv), (cv, c1)] {
        a.exec(
            "ip",
            &[
                "neigh",
                "replace",
                &b.ip().to_string(),
                "lladdr",
                b.mac(),
                "dev",
                "eth0",
            ],
        )
        .map_err(|e| e.to_string())?;
    }
    let restarted = unix_us();
    daemons[v] = hosts[v].spawn(
        &overlayd,
        &[
            "--peer",
            &local1,
            "--state-dir",
            &state[v],
            "--admin-socket",
            &sockets[v],
        ],
    );
    // -D: every reply line carries its Unix time, so the figure does not depend on how often we look.
    let pinger = hosts[0]
        .container()
        .spawn("ping", &["-D", "-n", "-i", "0.05", "-W", "1", &target]);
    let first_reply = |p: &Daemon| -> Option<u64> {
        p.log()
            .lines()
            .filter(|l| l.contains("bytes from"))
            .find_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
            .map(|t| (t * 1e6) as u64)
    };
    let reachable = wait_until(Duration::from_secs(30), || first_reply(&pinger).is_some());
    let restart_reachable = if reachable {
        first_reply(&pinger).map(|t| secs(t.saturating_sub(restarted)))
    } else {
        None
    };
    drop(pinger);
    if restart_reachable.is_none() {
        eprintln!(
            "warning: restarted host {} not reachable within 30 s:\n{}",
            v + 1,
            daemons[v].log()
        );
    }

    let modes: BTreeSet<String> = watchers
        .iter()
        .map(|w| watch::watch_mode(w).unwrap_or_else(|| "none".into()))
        .collect();
    let observe = modes.into_iter().collect::<Vec<_>>().join("+");
    let f = Figures {
        nodes: n,
        poll_ms,
        observe,
        new_mac_steps,
        joined_per_node,
        known_per_node,
        known_from_appearance,
        new_mac_known,
        known_everywhere,
        known_after_last_join,
        withdraw_per_node,
        restart_reachable,
        gossip_bps,
    };
    if o.json {
        println!("{}", to_json(&f));
    } else {
        print!("{}", table(&f));
    }
    drop(watchers);
    drop(daemons);
    drop(tb);
    Ok(())
}
