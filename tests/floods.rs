//! End-to-end proof of issue 9 ("Faults") §4 on the data plane: a flood of random source MACs from behind
//! one host's bridge.
//!
//! Owns: the local-MAC cap (`--max-local-macs`, refusals counted as `local_mac_cap`), eviction of the least
//! recently seen learned entry from a full FDB (`--fdb-max`, counted as `fdb_evictions`, so a new legitimate
//! MAC is still learned), and the per-source broadcast/multicast rate limit (`--bum-pps`, drops counted as
//! `bum_rate_limited`) — with the other containers still pinging each other throughout; and in cluster mode,
//! that only the local MACs kept are advertised (the other host's `control` entries stay within the cap).
//! Must never: send to any address outside the testbed, or assert on timings other than functional deadlines.
//!
//! The flood enters host 1's bridge from a TAP port: `flood_sender` below, re-executed by this test binary
//! inside host 1's namespace (as `tests/common/garbage.rs` does), creates the TAP, plugs it into `ovl0` and
//! writes crafted Ethernet frames into it — to the bridge and overlayd exactly what a container behind a veth
//! sends, with no raw socket and no extra tool. It keeps the port (and so the bridge's table) until killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{counter, ctl_json, drops, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{pseudo_random_bytes, wait_until, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Frames the flood sends, each from a new random source MAC.
const FLOOD_FRAMES: usize = 20_000;
/// `--max-local-macs` on every host.
const MAX_LOCAL: usize = 64;
/// `--fdb-max` on every host: well below the flood, so the receivers' tables fill and evict.
const FDB_MAX: usize = 512;
/// The TAP port the flood enters host 1's bridge through.
const FLOOD_PORT: &str = "ovfl0";

/// Static mode: `--peer` every host of `peers`, with the flood limits.
fn start(host: &Host, peers: &[&Host]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.push("--peer".into());
        args.push(p.underlay_ip().to_string());
    }
    args.extend(["--local".to_string(), host.underlay_ip().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_with(host, &args)
}

/// overlayd on `host` with `args` plus the flood limits; waits (20 s: a join includes a QUIC handshake)
/// until its admin endpoint answers and its TAP exists.
fn start_with(host: &Host, args: &[&str]) -> Daemon {
    let (max_local, fdb_max) = (MAX_LOCAL.to_string(), FDB_MAX.to_string());
    let mut args = args.to_vec();
    args.extend(["--max-local-macs", &max_local, "--fdb-max", &fdb_max]);
    start_plain(host, &args)
}

/// overlayd on `host` with exactly `args` (default limits); waits as [`start_with`] does.
fn start_plain(host: &Host, args: &[&str]) -> Daemon {
    let mut d = spawn_overlayd(host, args);
    let ready = wait_until(Duration::from_secs(20), || {
        !d.is_running() || (host.link_exists("ovl1") && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 20 s:\n{}", d.cmdline(), d.log());
    d
}

/// (entries, of which local) in `overlayctl fdb` on `host`.
fn fdb_size(host: &Host) -> (usize, usize) {
    let fdb = ctl_json(host, "fdb");
    let rows = fdb
        .as_array()
        .unwrap_or_else(|| panic!("fdb is not a list: {fdb}"));
    let local = rows
        .iter()
        .filter(|r| r.get("origin").and_then(Value::as_str) == Some("local"))
        .count();
    (rows.len(), local)
}

/// The FDB row of `mac` on `host` as (vtep, origin).
fn fdb_entry(host: &Host, mac: &str) -> Option<(String, String)> {
    let fdb = ctl_json(host, "fdb");
    fdb.as_array()?.iter().find_map(|r| {
        let m = r.get("mac").and_then(Value::as_str)?;
        m.eq_ignore_ascii_case(mac).then(|| {
            let f = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (f("vtep"), f("origin"))
        })
    })
}

/// How many of the flood's source MACs host 1's bridge holds on the flood port (`bridge fdb show`).
fn flood_macs_on_bridge(h: &Host) -> usize {
    let out = h.run("bridge", &["fdb", "show", "br", "ovl0"]);
    out.lines()
        .filter(|l| l.starts_with("0a:f1:") && l.contains(&format!("dev {FLOOD_PORT} ")))
        .count()
}

/// Resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// The flood's frames: a new random unicast, locally administered source MAC each (never a container's
/// `02:00:…`); every other one broadcast, the rest to a random unknown unicast MAC (flooded to every VTEP,
/// so the other hosts learn the sources). EtherType 0x88b5 (IEEE local experimental), 46-byte payload.
fn flood_frames() -> Vec<[u8; 60]> {
    let r = pseudo_random_bytes(0xf100d, FLOOD_FRAMES * 10);
    r.chunks_exact(10)
        .enumerate()
        .map(|(i, c)| {
            let mut f = [0u8; 60];
            if i % 2 == 0 {
                f[..6].fill(0xff);
            } else {
                f[..6].copy_from_slice(&[0x0e, 0xd5, c[6], c[7], c[8], c[9]]);
            }
            f[6..12].copy_from_slice(&[0x0a, 0xf1, c[0], c[1], c[2], c[3]]);
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            f
        })
        .collect()
}

/// Starts the flood from host `h`'s bridge; returns once every frame was written (60 s at most).
fn start_flood(h: &Host) -> Daemon {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let exe = exe.to_string_lossy();
    let env = format!("OVT_FLOOD_PORT={FLOOD_PORT}");
    let mut d = h.spawn(
        "env",
        &[
            &env,
            &exe,
            "--exact",
            "flood_sender",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    let done = format!("flood sent: {FLOOD_FRAMES}");
    let ok = wait_until(Duration::from_secs(60), || {
        !d.is_running() || d.log().contains(&done)
    });
    assert!(
        ok && d.is_running(),
        "flood sender did not finish within 60 s:\n{}",
        d.log()
    );
    d
}

/// Helper, not a test: when `OVT_FLOOD_PORT` is set (re-executed by [`start_flood`] inside a host
/// namespace), creates that TAP, plugs it into `ovl0`, writes the flood into it, prints how many frames it
/// wrote, and keeps the port until killed (2 minutes at most). Does nothing in a normal run.
#[test]
fn flood_sender() {
    use dataplane::io::{Tap, TapConfig};
    let Ok(name) = std::env::var("OVT_FLOOD_PORT") else {
        return;
    };
    let tap = Tap::create(&TapConfig {
        name: name.clone(),
        vnet_hdr: false,
        queues: 1,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for cmd in [
        vec!["link", "set", &name, "master", "ovl0"],
        vec!["link", "set", &name, "up"],
    ] {
        let st = std::process::Command::new("ip")
            .args(&cmd)
            .status()
            .unwrap_or_else(|e| panic!("ip (package iproute2): {e}"));
        assert!(st.success(), "ip {cmd:?}: {st}");
    }
    let q = &tap.queues()[0];
    let mut sent = 0;
    for (i, f) in flood_frames().iter().enumerate() {
        q.write(f).unwrap_or_else(|e| panic!("write to {name}: {e}"));
        sent += 1;
        // Bounded rate (≤ ~25 000 frames/s) so that most of the flood gets through the kernel's queues.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    println!("flood sent: {sent}");
    std::thread::sleep(Duration::from_secs(120));
}

/// Host 1 hosts the flood; containers 2 and 3 (hosts 2 and 3) are the bystanders, container 1 sits next to
/// the flood. Afterwards: host 1 holds at most `MAX_LOCAL` local MACs and counted the rest, its broadcasts
/// were rate-limited, hosts 2 and 3 evicted learned entries to stay within `FDB_MAX`, every container still
/// reaches every other, and container 3 under a new MAC is learned on host 2 at once.
#[test]
fn random_source_mac_flood_is_capped_evicted_and_rate_limited() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let d1 = start(h1, &[h2, h3]);
    let d2 = start(h2, &[h1, h3]);
    let _d3 = start(h3, &[h1, h2]);
    let d1_pid = d1.pid();
    let (c1, c2, c3) = (tb.container(1), tb.container(2), tb.container(3));
    ping_ok(c1, c2.ip(), 2);
    ping_ok(c2, c3.ip(), 2);
    ping_ok(c3, c1.ip(), 2);
    let before = [h1, h2, h3].map(fdb_size);
    let rss_before = [d1_pid, d2.pid()].map(rss_kib);

    let t = Instant::now();
    let _flood = start_flood(h1);
    let flood_time = t.elapsed();
    // On a loaded machine the kernel drops part of the flood (backlog and TAP queues) before the bridge or
    // overlayd see it: what counts is the MACs that reached host 1's bridge.
    let on_bridge = flood_macs_on_bridge(h1);
    assert!(
        on_bridge >= FLOOD_FRAMES / 10,
        "only {on_bridge} of the flood's {FLOOD_FRAMES} MACs reached host 1's bridge"
    );
    // Host 1 reads its bridge's table every second: each refused MAC is counted once, at the next read.
    let mut s1 = Value::Null;
    let counted = wait_until(Duration::from_secs(10), || {
        s1 = ctl_json(h1, "stats");
        counter(&s1, "local_mac_cap") as usize >= on_bridge.saturating_sub(MAX_LOCAL)
    });
    let capped = counter(&s1, "local_mac_cap") as usize;
    assert!(
        counted && capped <= on_bridge,
        "host 1 counted {capped} refused local MACs for {on_bridge} new ones on its bridge: {s1}"
    );
    let (h1_len, h1_local) = fdb_size(h1);
    assert!(
        h1_local <= MAX_LOCAL,
        "host 1 has {h1_local} local MACs, more than --max-local-macs {MAX_LOCAL}"
    );
    assert!(
        h1_local >= MAX_LOCAL - 4,
        "host 1 has only {h1_local} local MACs: was the flood seen?"
    );
    let limited = drops(&s1, "bum_rate_limited");
    assert!(limited > 0, "no broadcast was rate-limited on host 1: {s1}");
    let s2 = ctl_json(h2, "stats");
    let s3 = ctl_json(h3, "stats");
    for (h, s) in [(h2, &s2), (h3, &s3)] {
        let (len, _) = fdb_size(h);
        assert!(
            len <= FDB_MAX,
            "host {} FDB has {len} entries > {FDB_MAX}",
            h.index()
        );
        assert!(
            counter(s, "fdb_evictions") > 0,
            "host {} evicted nothing although the flood overfilled its FDB: {s}",
            h.index()
        );
    }

    // The containers' own entries were never evicted for the flood's learned ones.
    for (h, c) in [(h1, c1), (h2, c2), (h3, c3)] {
        let local = Some((h.underlay_ip().to_string(), "local".to_string()));
        assert_eq!(
            fdb_entry(h, c.mac()),
            local,
            "container {}'s MAC on host {}",
            c.index(),
            h.index()
        );
    }

    // Bystanders and the flood's neighbour still reach each other.
    ping_ok(c2, c3.ip(), 3);
    ping_ok(c3, c2.ip(), 3);
    ping_ok(c1, c2.ip(), 3);
    ping_ok(c3, c1.ip(), 3);

    // A new legitimate MAC (container 3 gets a new address) is learned on host 2, whose FDB is full of the
    // flood's MACs, as soon as it speaks: not flooded forever.
    let new_mac = "02:00:00:00:0a:03";
    c3.run("ip", &["link", "set", "dev", "eth0", "address", new_mac]);
    for c in [c2, c3] {
        c.run("ip", &["neigh", "flush", "all"]);
    }
    ping_ok(c3, c2.ip(), 3);
    let learned = Some((h3.underlay_ip().to_string(), "learned".to_string()));
    assert!(
        wait_until(Duration::from_secs(5), || fdb_entry(h2, new_mac) == learned),
        "host 2 did not learn container 3's new MAC: {:?}",
        fdb_entry(h2, new_mac)
    );
    ping_ok(c2, c3.ip(), 3);

    let after = [h1, h2, h3].map(fdb_size);
    let rss_after = [d1_pid, d2.pid()].map(rss_kib);
    println!(
        "flood: {FLOOD_FRAMES} frames from random source MACs written in {flood_time:?}; {on_bridge} MACs reached host 1's bridge, overlayd read {} frames from its TAP",
        counter(&s1, "rx_frames")
    );
    println!("fdb (entries, local) before: {before:?}  after: {after:?}  (host 1 right after: {h1_len}, {h1_local})");
    println!(
        "rss KiB host 1 before/after: {}/{}; host 2: {}/{}",
        rss_before[0], rss_after[0], rss_before[1], rss_after[1]
    );
    println!(
        "host 1: local_mac_cap {capped}, bum_rate_limited {limited}, fdb_evictions {}; host 2: fdb_evictions {}, fdb_full {}; host 3: fdb_evictions {}",
        counter(&s1, "fdb_evictions"),
        counter(&s2, "fdb_evictions"),
        counter(&s2, "fdb_full"),
        counter(&s3, "fdb_evictions"),
    );
}

/// Cluster mode: host 1 advertises only the local MACs it kept, so host 2's control entries for host 1 stay
/// within `--max-local-macs` however many MACs the flood brings to host 1's bridge.
#[test]
fn cluster_mode_advertises_at_most_max_local_macs() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_with(h1, &["--init-cluster", "--local", &h1.underlay_ip().to_string()]);
    let tok = common::overlay::ctl_socket(h1, &["token"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();
    let _d2 = start_with(h2, &["--peer", &h1.underlay_ip().to_string(), "--token", &tok]);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    let control_from_h1 = || {
        let fdb = ctl_json(h2, "fdb");
        let h1_ip = h1.underlay_ip().to_string();
        fdb.as_array().map_or(0, |rows| {
            rows.iter()
                .filter(|r| {
                    r.get("origin").and_then(Value::as_str) == Some("control")
                        && r.get("vtep").and_then(Value::as_str) == Some(h1_ip.as_str())
                })
                .count()
        })
    };
    let control = Some((h1.underlay_ip().to_string(), "control".to_string()));
    assert!(
        wait_until(Duration::from_secs(10), || fdb_entry(h2, c1.mac()) == control),
        "container 1's MAC never reached host 2 through the control plane: {}",
        ctl_json(h2, "fdb")
    );

    let _flood = start_flood(h1);
    // Host 1 reads its bridge every second and advertises its local MACs: wait until host 2 got the full set.
    let mut seen = 0;
    let filled = wait_until(Duration::from_secs(15), || {
        seen = control_from_h1();
        seen >= MAX_LOCAL - 4
    });
    assert!(
        filled,
        "host 2 has only {seen} control entries for host 1's MACs after the flood"
    );
    // And it stays there: a few more sync and advert rounds bring no more.
    std::thread::sleep(Duration::from_secs(3));
    let seen = control_from_h1();
    let (_, h1_local) = fdb_size(h1);
    assert!(h1_local <= MAX_LOCAL, "host 1 has {h1_local} local MACs");
    assert!(
        seen <= MAX_LOCAL,
        "host 2 has {seen} control entries for host 1: more than host 1's --max-local-macs {MAX_LOCAL}"
    );
    assert_eq!(
        fdb_entry(h2, c1.mac()),
        control,
        "container 1's advert survived the flood"
    );
    ping_ok(c2, c1.ip(), 3);
    println!("cluster: host 1 local MACs {h1_local}, host 2 control entries for host 1 {seen}");
}

/// overlayd's gossip budget (the default `ControlConfig::gossip_budget`), bytes per second.
const GOSSIP_BUDGET: u64 = 256_000;
/// The budget's burst: one table piece (`outbox::PIECE_BYTES`).
const PIECE_BYTES: u64 = 16 * 1024;
/// How often overlayd copies the control plane's counters for `overlayctl stats` (`cluster::STATS_COPY`).
const STATS_COPY: Duration = Duration::from_secs(1);
/// How late that copy may be on a loaded machine (the daemon's runtime is busy with the flood).
const COPY_LATE: Duration = Duration::from_millis(250);

/// `control.<key>` of `overlayctl stats --json`; panics naming it when absent.
fn control_counter(s: &Value, key: &str) -> u64 {
    s.get("control")
        .and_then(|c| c.get(key))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("stats has no control.{key}: {s}"))
}

/// How many `control` entries `host` holds for MACs behind `owner`.
fn control_entries_from(host: &Host, owner: &Host) -> usize {
    let fdb = ctl_json(host, "fdb");
    let ip = owner.underlay_ip().to_string();
    fdb.as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|r| {
                r.get("origin").and_then(Value::as_str) == Some("control")
                    && r.get("vtep").and_then(Value::as_str) == Some(ip.as_str())
            })
            .count()
    })
}

/// One sample of host 1's sync counter: the test's clock just before and just after `overlayctl stats`.
struct Sample {
    before: Instant,
    after: Instant,
    sync_bytes: u64,
}

/// Cluster mode, default limits (`--max-local-macs 4096`, gossip budget 256 kB/s, 50 ms advert batches):
/// the flood brings 4096 new local MACs to host 1 at once. Host 1's FDB sync traffic stays within the
/// budget (plus one 16 KiB piece) while it ships them, no host ever reports a member other than alive,
/// hosts 2 and 3 end up with every MAC host 1 advertises as a `control` entry, and the MACs leave in
/// batches, not one advert each.
#[test]
fn cluster_flood_sync_stays_within_gossip_budget_without_false_deaths() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let _d1 = start_plain(h1, &["--init-cluster", "--local", &h1.underlay_ip().to_string()]);
    let tok = common::overlay::ctl_socket(h1, &["token"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();
    let seed = h1.underlay_ip().to_string();
    let _d2 = start_plain(h2, &["--peer", &seed, "--token", &tok]);
    let _d3 = start_plain(h3, &["--peer", &seed, "--token", &tok]);
    let hosts = [h1, h2, h3];
    let all_alive = |h: &Host| {
        let p = ctl_json(h, "peers");
        let rows = p.as_array().map_or(&[][..], Vec::as_slice);
        let ok = rows.len() == 3
            && rows
                .iter()
                .all(|r| r.get("state").and_then(Value::as_str) == Some("alive"));
        (ok, p)
    };
    assert!(
        wait_until(Duration::from_secs(20), || hosts.iter().all(|h| all_alive(h).0)),
        "the 3 nodes did not all see 3 alive members within 20 s: {:?}",
        hosts.map(|h| ctl_json(h, "peers"))
    );
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);
    // Let start-up sync settle (the counters are copied for `overlayctl` once a second).
    std::thread::sleep(Duration::from_secs(2));
    let s0 = ctl_json(h1, "stats");
    let rejoins0 = hosts.map(|h| control_counter(&ctl_json(h, "stats"), "rejoins"));

    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (samples, false_deaths, polls, converged, flood) = std::thread::scope(|sc| {
        // Polls host 1's sync counter and every host's member list (~every 250 ms) until told to stop.
        let sampler = sc.spawn(|| {
            let mut samples = Vec::new();
            let mut false_deaths = Vec::new();
            let mut polls = 0;
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + Duration::from_millis(250);
                let before = Instant::now();
                let s = ctl_json(h1, "stats");
                let after = Instant::now();
                samples.push(Sample {
                    before,
                    after,
                    sync_bytes: control_counter(&s, "sync_bytes_sent"),
                });
                for h in hosts {
                    let (ok, p) = all_alive(h);
                    if !ok {
                        false_deaths.push(format!("host {} at {:?}: {p}", h.index(), t0.elapsed()));
                    }
                }
                polls += 1;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (samples, false_deaths, polls)
        });
        let flood = start_flood(h1);
        // Host 1 reads its bridge every second: wait until it keeps its 4096 local MACs and hosts 2 and 3
        // hold every one of them as a control entry (60 s: a functional deadline).
        let mut last = (0, 0, 0);
        let converged = wait_until(Duration::from_secs(60), || {
            let (_, local) = fdb_size(h1);
            last = (local, control_entries_from(h2, h1), control_entries_from(h3, h1));
            local >= 4000 && last.1 == local && last.2 == local
        })
        .then(|| t0.elapsed());
        // A little longer, so the samples show the sync traffic has ended.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let (samples, false_deaths, polls) = sampler.join().unwrap();
        (samples, false_deaths, polls, converged.ok_or(last), flood)
    });
    drop(flood);
    let converged = converged.unwrap_or_else(|(local, on2, on3)| {
        panic!("after 60 s host 1 keeps {local} local MACs; hosts 2 and 3 hold {on2} and {on3} of them as control entries")
    });
    let (_, advertised) = fdb_size(h1);
    let s1 = ctl_json(h1, "stats");

    // (a) The budget. The counters are a copy made once a second (`STATS_COPY`), so a sample shows the
    // counter as of some instant in [before - STATS_COPY - COPY_LATE, after]: the bytes between samples
    // i < j were sent within T = after_j - before_i + STATS_COPY + COPY_LATE, and a token bucket of
    // GOSSIP_BUDGET B/s with a burst of one piece lets at most GOSSIP_BUDGET × T + PIECE_BYTES through.
    let mut worst: Option<(u64, f64, u64)> = None;
    for (i, a) in samples.iter().enumerate() {
        for b in &samples[i + 1..] {
            let sent = b.sync_bytes - a.sync_bytes;
            let t = (b.after - a.before + STATS_COPY + COPY_LATE).as_secs_f64();
            let bound = (GOSSIP_BUDGET as f64 * t) as u64 + PIECE_BYTES;
            assert!(
                sent <= bound,
                "host 1 sent {sent} sync bytes within {t:.2} s: more than the budget allows ({bound})"
            );
            let ratio = |(s, _, bd): (u64, f64, u64)| s as f64 / bd as f64;
            if worst.is_none_or(|w| ratio((sent, t, bound)) > ratio(w)) {
                worst = Some((sent, t, bound));
            }
        }
    }
    // Per copy of the counters (≈ 1 s of the daemon's time each): the sync bytes of each copy with traffic.
    let changes: Vec<u64> = samples
        .windows(2)
        .map(|w| w[1].sync_bytes - w[0].sync_bytes)
        .filter(|d| *d > 0)
        .collect();
    let max_per_second = changes.iter().copied().max().unwrap_or(0);
    let copies = changes.len();
    let total = control_counter(&s1, "sync_bytes_sent") - control_counter(&s0, "sync_bytes_sent");
    let deferred = control_counter(&s1, "sync_deferred") - control_counter(&s0, "sync_deferred");
    // The flood needed the budget: more than a second of it (16 times the burst), and messages waited
    // for tokens. (The anti-entropy sync ships 4096 MACs to two peers in about 1.8 s of budget.)
    assert!(
        total > GOSSIP_BUDGET && deferred > 0,
        "the flood did not exercise the budget: {total} sync bytes, {deferred} deferred"
    );

    // (b) No false death, and nobody rejoined.
    assert!(polls >= 8, "only {polls} polls of the member lists");
    assert!(
        false_deaths.is_empty(),
        "members reported non-alive during the flood:\n{}",
        false_deaths.join("\n")
    );
    let rejoins = hosts.map(|h| control_counter(&ctl_json(h, "stats"), "rejoins"));
    assert_eq!(rejoins, rejoins0, "a node was declared down and rejoined");

    // (d) Batching: far fewer batches and messages than MACs.
    let batches = control_counter(&s1, "advert_batches") - control_counter(&s0, "advert_batches");
    let messages = control_counter(&s1, "sync_messages_sent") - control_counter(&s0, "sync_messages_sent");
    assert!(
        (batches as usize) < advertised / 10 && (messages as usize) < advertised / 10,
        "host 1 advertised {advertised} MACs in {batches} batches and {messages} sync messages"
    );

    let (sent, t, bound) = worst.unwrap_or_default();
    println!(
        "budget: host 1 sent {total} sync bytes for the flood ({deferred} times a message waited for the budget); \
         most in one counter copy (~1 s): {max_per_second} B (budget {GOSSIP_BUDGET} + piece {PIECE_BYTES}); \
         per copy: {changes:?}; tightest window: {sent} B in ≤ {t:.2} s (bound {bound})"
    );
    println!("members: {polls} polls of 3 member lists, 0 non-alive rows, rejoins {rejoins:?}");
    println!(
        "convergence: hosts 2 and 3 held all {advertised} MACs of host 1 as control entries {converged:?} after the flood started"
    );
    println!(
        "batching: {advertised} MACs, {batches} advert batches, {messages} sync messages ({copies} counter copies with traffic)"
    );
}
