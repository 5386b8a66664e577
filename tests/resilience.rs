//! End-to-end proof of issue 9 §6–§8 resilience: underlay loss, partition and heal, a saturated data path,
//! garbage during a transfer, and least privilege, with real overlayd processes in network namespaces.
//!
//! Owns: the loss/partition/overload/garbage/capability scenarios and the figures docs/RELIABILITY.md quotes
//! (each test prints them; run with `--nocapture`). Long variants (60 s of loss, 10^6 garbage datagrams) run
//! with `OVERLAYD_LONG_TESTS=1`; the short ones run in CI.
//! Must never: assert on a latency or a convergence time other than a generous functional deadline (the
//! targets are printed, not asserted), touch loopback or the root namespace with nftables (rules live in a
//! host namespace and match its `eth0` only), or send traffic outside the testbed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::garbage;
use common::overlay::{ctl_json, form_cluster, ping_ok, rows, start_overlayd, str_field};
use common::testbed::{tcp_transfer, wait_until, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("OVERLAYD_LONG_TESTS").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// `(addr, state, generation)` of every `peers` row on `host`.
fn members(host: &Host) -> Vec<(String, String, u64)> {
    rows(&ctl_json(host, "peers"))
        .iter()
        .map(|r| {
            (
                str_field(r, "addr").to_string(),
                str_field(r, "state").to_string(),
                r.get("generation").and_then(Value::as_u64).unwrap_or(0),
            )
        })
        .collect()
}

fn all_alive(hosts: &[&Host]) -> bool {
    hosts.iter().all(|h| {
        let m = members(h);
        m.len() == hosts.len() && m.iter().all(|(_, s, _)| s == "alive")
    })
}

/// Loads an nftables table `name` with `rules` (chain bodies) into `host`'s namespace only.
fn nft_table(host: &Host, name: &str, input: &str, output: &str) {
    let path = host
        .log_dir()
        .join(format!("{}-{name}.nft", host.ns()))
        .to_string_lossy()
        .into_owned();
    let script = format!(
        "table inet {name} {{\n\
         chain input {{\n type filter hook input priority 0; policy accept;\n {input}\n }}\n\
         chain output {{\n type filter hook output priority 0; policy accept;\n {output}\n }}\n}}\n"
    );
    std::fs::write(&path, script).unwrap();
    if let Err(e) = host.exec("nft", &["-f", &path]) {
        panic!("nftables in {} (apt-get install nftables): {e}", host.ns());
    }
}

fn nft_delete(host: &Host, name: &str) {
    host.run("nft", &["delete", "table", "inet", name]);
}

/// Any row that is not `alive`, a missing member, or a changed generation (a death followed by a rejoin
/// between two polls), compared with `baseline`.
fn membership_faults(host: &Host, baseline: &[(String, String, u64)], n: usize) -> Vec<String> {
    let now = members(host);
    let mut faults = Vec::new();
    if now.len() != n {
        faults.push(format!(
            "host {} lists {} members, not {n}: {now:?}",
            host.index(),
            now.len()
        ));
    }
    for (addr, state, gen) in &now {
        if state != "alive" && state != "suspect" {
            faults.push(format!("host {} sees {addr} {state}", host.index()));
        }
        if let Some((_, _, g0)) = baseline.iter().find(|(a, _, _)| a == addr) {
            if g0 != gen {
                faults.push(format!(
                    "host {} sees {addr} generation {g0} → {gen}",
                    host.index()
                ));
            }
        }
    }
    faults
}

/// The lines of `d`'s log after byte `from` (see [`log_len`]) in which the node says it was declared down
/// and rejoined: a false death, even one too short for any `peers` poll to see (the rejoined node keeps its
/// generation; only its identity's renewal changes, which `peers --json` does not show).
fn rejoins_since(d: &Daemon, from: usize) -> usize {
    let log = d.log();
    log.get(from..)
        .unwrap_or("")
        .matches("declared down by the cluster")
        .count()
}

fn log_len(d: &Daemon) -> usize {
    d.log().len()
}

/// The scenarios of this file run one at a time: each one's conditions are the ones it names (20% loss is
/// not also an `iperf3` saturating the same two cores from the test next door; that is its own scenario).
static SCENARIO: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SCENARIO.lock().unwrap_or_else(|e| e.into_inner())
}

/// The replicated part of a host's FDB as `mac → vtep`: `local` entries (VTEP: the host itself) and
/// `control` entries. `learned` entries are left out: they record which data frames this host happened to
/// receive (they differ between hosts by design and age out), they are not state the control plane syncs.
fn fdb_view(host: &Host) -> BTreeMap<String, String> {
    rows(&ctl_json(host, "fdb"))
        .iter()
        .filter_map(|r| {
            let vtep = match str_field(r, "origin") {
                "local" => host.underlay_ip().to_string(),
                "control" => str_field(r, "vtep").to_string(),
                _ => return None,
            };
            Some((str_field(r, "mac").to_ascii_lowercase(), vtep))
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------------------------------------------------
// §6 loss
// ---------------------------------------------------------------------------------------------------------

/// 20 % loss each way on host 1's underlay `eth0` (nftables `numgen random`), 10 s (60 s with
/// `OVERLAYD_LONG_TESTS=1`): no member is declared dead, polled on every host throughout.
#[test]
fn underlay_loss_20_percent_declares_no_member_dead() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(3).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let daemons = form_cluster(&tb, &hosts, "res", &|_| Vec::new());
    for a in &hosts {
        for b in &hosts {
            if a.index() != b.index() {
                ping_ok(a.container(), b.container().ip(), 1);
            }
        }
    }
    let baseline: Vec<_> = hosts.iter().map(|h| members(h)).collect();
    let lossy = hosts[0];
    let drop = "numgen random mod 100 < 20 counter drop";
    nft_table(
        lossy,
        "ovtloss",
        &format!("iifname \"eth0\" {drop}"),
        &format!("oifname \"eth0\" {drop}"),
    );
    let secs = if long() { 60 } else { 10 };
    let marks: Vec<usize> = daemons.iter().map(log_len).collect();
    let (start, end) = (Instant::now(), Instant::now() + Duration::from_secs(secs));
    let (mut polls, mut suspect_seen, mut faults) = (0u32, 0u32, Vec::new());
    while Instant::now() < end {
        for (h, b) in hosts.iter().zip(&baseline) {
            for f in membership_faults(h, b, hosts.len()) {
                faults.push(format!("t={:.1}s {f}", start.elapsed().as_secs_f64()));
            }
            suspect_seen += members(h).iter().filter(|(_, s, _)| s == "suspect").count() as u32;
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // The loss really was there: the rule's packet counters.
    let rules = lossy.run("nft", &["list", "table", "inet", "ovtloss"]);
    nft_delete(lossy, "ovtloss");
    let dropped: Vec<u64> = rules
        .split("packets ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect();
    // (host, times it was declared down and rejoined during the loss)
    let rejoins: Vec<(usize, usize)> = daemons
        .iter()
        .zip(&marks)
        .enumerate()
        .map(|(i, (d, &m))| (i + 1, rejoins_since(d, m)))
        .filter(|&(_, n)| n > 0)
        .collect();
    println!(
        "loss 20% each way on host 1 eth0 for {secs} s: {polls} polls of 3 hosts, suspect rows seen {suspect_seen}, \
         faults {}, rejoins {rejoins:?}; nft drops in/out {dropped:?}",
        faults.len()
    );
    assert!(
        dropped.len() == 2 && dropped.iter().all(|&d| d > 0),
        "the loss rules dropped nothing, so this test proved nothing:\n{rules}"
    );
    assert!(
        faults.is_empty() && rejoins.is_empty(),
        "false deaths under 20% loss: {faults:#?}; nodes that rejoined: {rejoins:?}"
    );
    assert!(all_alive(&hosts), "not all alive after the loss ended");
}

// ---------------------------------------------------------------------------------------------------------
// §6 partition, then heal
// ---------------------------------------------------------------------------------------------------------

/// Host 3 is cut off (nftables drops everything on its `eth0`), both sides notice, a new MAC appears on
/// each side, then the partition heals: every FDB ends up equal. Prints the time from the heal; the issue's
/// target is 1 s, the assertion is a functional 30 s.
#[test]
fn partition_then_heal_makes_fdbs_equal() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(3).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let _daemons = form_cluster(&tb, &hosts, "res", &|_| Vec::new());
    for a in &hosts {
        for b in &hosts {
            if a.index() != b.index() {
                ping_ok(a.container(), b.container().ip(), 1);
            }
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let v: Vec<_> = hosts.iter().map(|h| fdb_view(h)).collect();
            v.iter().all(|f| f.len() >= 3 && *f == v[0])
        }),
        "FDBs not equal before the partition"
    );
    let (h3, cut_at) = (hosts[2], Instant::now());
    nft_table(h3, "ovtpart", "iifname \"eth0\" drop", "oifname \"eth0\" drop");
    let noticed = wait_until(Duration::from_secs(20), || {
        let side_a = hosts[..2].iter().all(|h| {
            members(h)
                .iter()
                .all(|(a, s, _)| !a.starts_with(&format!("{}:", h3.underlay_ip())) || s == "dead")
        });
        let side_b = members(h3).iter().filter(|(_, s, _)| s == "dead").count() == 2;
        side_a && side_b
    });
    let notice = cut_at.elapsed();
    assert!(
        noticed,
        "the partition was not noticed within 20 s: {:?} / {:?}",
        members(hosts[0]),
        members(h3)
    );

    // A new MAC on each side: container 1 and container 3 change their address and send (an ARP broadcast),
    // so their host's bridge learns it and overlayd advertises it.
    let new_macs = ["02:00:00:00:09:01", "02:00:00:00:09:03"];
    for (c, mac) in [(hosts[0].container(), new_macs[0]), (h3.container(), new_macs[1])] {
        c.run("ip", &["link", "set", "eth0", "address", mac]);
        let _ = c.exec(
            "ping",
            &["-c", "1", "-W", "1", &hosts[1].container().ip().to_string()],
        );
    }
    let local_on = |h: &Host, mac: &str| fdb_view(h).get(mac) == Some(&h.underlay_ip().to_string());
    assert!(
        wait_until(Duration::from_secs(10), || local_on(hosts[0], new_macs[0])
            && local_on(h3, new_macs[1])),
        "the new MACs did not become local on their hosts"
    );

    let healed_at = Instant::now();
    nft_delete(h3, "ovtpart");
    let mut alive_after = None;
    let equal = wait_until(Duration::from_secs(30), || {
        if alive_after.is_none() && all_alive(&hosts) {
            alive_after = Some(healed_at.elapsed());
        }
        let v: Vec<_> = hosts.iter().map(|h| fdb_view(h)).collect();
        v.iter().all(|f| *f == v[0]) && new_macs.iter().all(|m| v[0].contains_key(*m))
    });
    let converged = healed_at.elapsed();
    // The FDBs may agree before every member lists every other alive again; membership must heal too.
    let healed = wait_until(Duration::from_secs(30), || all_alive(&hosts));
    if healed && alive_after.is_none() {
        alive_after = Some(healed_at.elapsed());
    }
    println!(
        "partition of host 3 noticed after {notice:?}; after the heal: all alive after {alive_after:?}, FDBs equal \
         (with both new MACs) after {converged:?} (target 1 s)"
    );
    if !equal {
        for h in &hosts {
            eprintln!(
                "host {} fdb {} peers {:?}",
                h.index(),
                ctl_json(h, "fdb"),
                members(h)
            );
        }
    }
    assert!(equal, "FDBs not equal within 30 s of the heal");
    assert!(
        healed,
        "members not all alive within 30 s of the heal: {:?}",
        hosts.iter().map(|h| members(h)).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------------------
// §6 overload
// ---------------------------------------------------------------------------------------------------------

/// Re-executed inside a host namespace by [`probe_admin`]: GET /v1/peers on `OVT_PROBE_ADDR` every 50 ms
/// for `OVT_PROBE_SECS`, printing `lat_us <n>` per answer and `fail <reason>` per failed request.
#[test]
fn admin_prober() {
    let Ok(addr) = std::env::var("OVT_PROBE_ADDR") else {
        return;
    };
    let secs: u64 = std::env::var("OVT_PROBE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let t = Instant::now();
        let r = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /v1/peers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        let lat = t.elapsed();
        match r {
            Ok(out) if out.starts_with("HTTP/1.1 200") => {
                let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
                let states: Vec<&str> = body
                    .split("\"state\":\"")
                    .skip(1)
                    .filter_map(|s| s.split('"').next())
                    .collect();
                println!("lat_us {} states {}", lat.as_micros(), states.join(","));
            }
            Ok(out) => println!("fail {:?}", out.lines().next()),
            Err(e) => println!("fail {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("prober done");
}

/// Runs [`admin_prober`] in `host`'s namespace for `secs`; returns the latencies and the failures.
fn probe_admin(host: &Host, secs: u64) -> (Vec<Duration>, Vec<String>, Vec<String>) {
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let out = host.run(
        "env",
        &[
            "OVT_PROBE_ADDR=127.0.0.1:7947",
            &format!("OVT_PROBE_SECS={secs}"),
            &exe,
            "--exact",
            "admin_prober",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    assert!(out.contains("prober done"), "prober output:\n{out}");
    let (mut lat, mut fails, mut bad_states) = (Vec::new(), Vec::new(), Vec::new());
    for l in out.lines() {
        if let Some(rest) = l.strip_prefix("lat_us ") {
            let mut it = rest.split(" states ");
            let us: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            lat.push(Duration::from_micros(us));
            let states = it.next().unwrap_or("");
            if states.split(',').any(|s| s != "alive" && s != "suspect") {
                bad_states.push(states.to_string());
            }
        } else if l.starts_with("fail ") {
            fails.push(l.to_string());
        }
    }
    (lat, fails, bad_states)
}

/// iperf3 both ways between containers 1 and 2 for ~10 s on a 3-host cluster: nobody is declared dead and
/// every admin request during the load is answered. Prints the admin latency (target: 100 ms).
#[test]
fn saturated_data_path_causes_no_false_death_and_admin_answers() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(3).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let daemons = form_cluster(&tb, &hosts, "res", &|_| Vec::new());
    let (c1, c2) = (hosts[0].container(), hosts[1].container());
    ping_ok(c1, c2.ip(), 2);
    let baseline: Vec<_> = hosts.iter().map(|h| members(h)).collect();
    let marks: Vec<usize> = daemons.iter().map(log_len).collect();
    let mut server = c2.spawn("iperf3", &["-s", "-1", "-p", "5201"]);
    let secs = 10u64;
    let (iperf, (lat, fails, bad), faults) = std::thread::scope(|s| {
        let iperf = s.spawn(|| {
            let ip = c2.ip().to_string();
            let t = secs.to_string();
            let mut last = String::new();
            for _ in 0..50 {
                match c1.exec(
                    "iperf3",
                    &["-c", &ip, "-p", "5201", "--bidir", "-t", &t, "-f", "m"],
                ) {
                    Ok(out) => return Ok(out),
                    Err(e) if e.spawn_error.is_some() => return Err(format!("{e} (apt-get install iperf3)")),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(last)
        });
        let probe = s.spawn(|| probe_admin(hosts[0], secs + 1));
        let mut faults = Vec::new();
        let end = Instant::now() + Duration::from_secs(secs + 1);
        while Instant::now() < end {
            for (h, b) in hosts.iter().zip(&baseline) {
                faults.extend(membership_faults(h, b, hosts.len()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (iperf.join().unwrap(), probe.join().unwrap(), faults)
    });
    let _ = server.try_wait();
    let iperf = iperf.unwrap_or_else(|e| panic!("iperf3: {e}\nserver log: {}", server.log()));
    let summary: Vec<&str> = iperf
        .lines()
        .filter(|l| l.contains("sender") || l.contains("receiver"))
        .collect();
    let mut sorted = lat.clone();
    sorted.sort();
    // (host, times it was declared down and rejoined during the load)
    let rejoins: Vec<(usize, usize)> = daemons
        .iter()
        .zip(&marks)
        .enumerate()
        .map(|(i, (d, &m))| (i + 1, rejoins_since(d, m)))
        .filter(|&(_, n)| n > 0)
        .collect();
    println!(
        "iperf3 --bidir {secs} s c1↔c2: {summary:#?}\nadmin GET /v1/peers on host 1 during the load: {} answers, \
         p50 {:?}, p99 {:?}, max {:?} (target 100 ms), over 100 ms: {}, failures {}; membership faults {}, rejoins {rejoins:?}",
        lat.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or_default(),
        sorted.iter().filter(|d| **d > Duration::from_millis(100)).count(),
        fails.len(),
        faults.len()
    );
    assert!(summary.len() >= 2, "iperf3 printed no summary:\n{iperf}");
    assert!(
        lat.len() >= 20,
        "too few admin answers during the load: {}",
        lat.len()
    );
    assert!(
        fails.is_empty(),
        "admin requests failed during the load: {fails:?}"
    );
    assert!(
        bad.is_empty(),
        "the admin API showed dead members during the load: {bad:?}"
    );
    assert!(
        faults.is_empty() && rejoins.is_empty(),
        "false deaths under load: {faults:?}; rejoined: {rejoins:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// §8 garbage during a transfer
// ---------------------------------------------------------------------------------------------------------

/// Drop reasons that garbage from the underlay may be counted under (as in tests/e2e.rs).
const UNDERLAY_DROPS: &[&str] = &[
    "short",
    "bad_flags",
    "unknown_vni",
    "bad_src_mac",
    "non_member",
    "spoofed_src",
    "vlan_tagged",
    "tap_write_error",
];

#[derive(Debug, Clone)]
struct Stats {
    tx_frames: u64,
    rx_datagrams: u64,
    drops: BTreeMap<String, u64>,
}

impl Stats {
    fn get(host: &Host) -> Stats {
        let v = ctl_json(host, "stats");
        let n = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("no `{k}` in {v}"))
        };
        let drops = v
            .get("drops")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no drops in {v}"))
            .iter()
            .map(|(k, c)| (k.clone(), c.as_u64().unwrap_or(0)))
            .collect();
        Stats {
            tx_frames: n("tx_frames"),
            rx_datagrams: n("rx_datagrams"),
            drops,
        }
    }
    /// Drops of traffic, leaving out `bridge_mac`: the bridge's own frames (IGMP/MLD reports) dropped on the
    /// TAP side, which are neither datagrams read nor frames delivered.
    fn drops_total(&self) -> u64 {
        self.drops.values().sum::<u64>() - self.drops.get("bridge_mac").copied().unwrap_or(0)
    }
    fn underlay_drops(&self) -> u64 {
        UNDERLAY_DROPS
            .iter()
            .map(|k| self.drops.get(*k).copied().unwrap_or(0))
            .sum()
    }
}

fn kernel_udp_drops(host: &Host) -> u64 {
    let snmp = host.run("cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    let idx = names.split_whitespace().position(|n| n == "InErrors");
    let idx = idx.unwrap_or_else(|| panic!("no Udp InErrors in /proc/net/snmp:\n{snmp}"));
    values
        .split_whitespace()
        .nth(idx)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 50 000 garbage datagrams (10^6 with `OVERLAYD_LONG_TESTS=1`) at host 1's VXLAN port while container 2
/// sends a TCP stream to container 1: overlayd survives, the transfer is byte-identical, and every datagram
/// read is delivered or counted under exactly one drop reason, the garbage under underlay reasons.
#[test]
fn garbage_during_tcp_transfer_is_counted_and_the_transfer_completes() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let start = |h: &Host, peer: &Host| {
        start_overlayd(
            h,
            &[
                "--peer",
                &peer.underlay_ip().to_string(),
                "--local",
                &h.underlay_ip().to_string(),
            ],
        )
    };
    let mut d1 = start(h1, h2);
    let _d2 = start(h2, h1);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c2, c1.ip(), 2);
    std::thread::sleep(Duration::from_millis(300));
    let count: u64 = if long() { 1_000_000 } else { 50_000 };
    // Transfers of `mb` MiB, one after the other, until the garbage has all been sent: the stream is busy
    // for the whole run on a machine of any speed. Each one must arrive byte-identical.
    let mb = 16;
    let before = Stats::get(h1);
    let kernel_before = kernel_udp_drops(h1);
    let t0 = Instant::now();
    let garbage_done = AtomicBool::new(false);
    let (transfer, transfer_time, garbage_time) = std::thread::scope(|s| {
        let tr = s.spawn(|| {
            let mut n = 0u16;
            loop {
                let r = tcp_transfer(c2, c1, 5301 + n, mb, Duration::from_secs(120));
                n += 1;
                if r.is_err() || garbage_done.load(Ordering::Relaxed) {
                    return (r.map(|()| n), t0.elapsed());
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        garbage::send_n_from(h2, h1.underlay_ip(), 4789, 1, count);
        let g = t0.elapsed();
        garbage_done.store(true, Ordering::Relaxed);
        let (r, t) = tr.join().unwrap();
        (r, t, g)
    });
    let settled = wait_until(Duration::from_secs(10), || {
        let s = Stats::get(h1);
        s.underlay_drops() - before.underlay_drops() + kernel_udp_drops(h1) - kernel_before >= count
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = Stats::get(h1);
    let kernel_lost = kernel_udp_drops(h1) - kernel_before;
    let rx = after.rx_datagrams - before.rx_datagrams;
    let to_tap = after.tx_frames - before.tx_frames;
    let dropped = after.drops_total() - before.drops_total();
    let underlay = after.underlay_drops() - before.underlay_drops();
    let detail = format!(
        "garbage sent {count} in {garbage_time:?}; TCP c2→c1 in {mb} MiB transfers for {transfer_time:?}: \
         {transfer:?} transfers; host 1: \
         rx_datagrams +{rx}, to TAP +{to_tap}, drops +{dropped} (underlay reasons +{underlay}), kernel UDP InErrors \
         +{kernel_lost}\nbefore {before:?}\nafter {after:?}"
    );
    println!("{detail}");
    assert!(d1.is_running(), "overlayd on host 1 died:\n{}", d1.log());
    transfer.unwrap_or_else(|e| panic!("{e}\n{detail}"));
    assert!(
        garbage_time < transfer_time,
        "the garbage did not all arrive during the transfer: {detail}"
    );
    assert!(settled, "garbage not all accounted for within 10 s: {detail}");
    assert_eq!(rx, to_tap + dropped, "rx_datagrams ≠ delivered + drops: {detail}");
    // Garbage is counted under underlay reasons (or lost in the kernel's socket buffer); the transfer's own
    // datagrams are valid, so nothing beyond the garbage is counted there.
    assert!(
        underlay <= count,
        "more underlay drops than garbage sent: {detail}"
    );
    assert!(
        underlay + kernel_lost >= count,
        "garbage missing from the counters: {detail}"
    );
    ping_ok(c1, c2.ip(), 2);
}

/// Helper, not a test: sends the garbage when re-executed inside a host namespace.
#[test]
fn garbage_sender() {
    garbage::sender_main();
}

// ---------------------------------------------------------------------------------------------------------
// §7 least privilege
// ---------------------------------------------------------------------------------------------------------

/// `Cap*` lines of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(String, BTreeMap<String, u64>)> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for t in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let t = t.unwrap().path();
        let Ok(status) = std::fs::read_to_string(t.join("status")) else {
            continue; // the thread ended
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_string();
        let caps = status
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
            })
            .collect();
        out.push((name, caps));
    }
    out
}

/// Every thread of a running overlayd has exactly CAP_NET_ADMIN, CAP_SYS_ADMIN (setns for attach) and
/// CAP_SYS_PTRACE (/proc/PID/ns/net for attach by PID) effective, permitted and bounding, nothing
/// inheritable or ambient, and `NoNewPrivs`; the daemon still forwards and still restores a deleted TAP.
#[test]
fn daemon_keeps_only_its_capabilities_and_still_works() {
    let _one = one_at_a_time();
    const KEPT: u64 = 1 << 12 | 1 << 19 | 1 << 21;
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start_overlayd(
        h1,
        &[
            "--peer",
            &h2.underlay_ip().to_string(),
            "--local",
            &h1.underlay_ip().to_string(),
        ],
    );
    let _d2 = start_overlayd(
        h2,
        &[
            "--peer",
            &h1.underlay_ip().to_string(),
            "--local",
            &h2.underlay_ip().to_string(),
        ],
    );
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 2);

    // `ip netns exec` runs overlayd as a child; find the overlayd process itself.
    let pid = overlayd_pid(&d1);
    let threads = thread_caps(pid);
    println!("overlayd pid {pid}: {threads:?}");
    assert!(
        threads.len() >= 4,
        "expected the runtime and forwarding threads: {threads:?}"
    );
    for (name, caps) in &threads {
        for (k, want) in [
            ("CapEff", KEPT),
            ("CapPrm", KEPT),
            ("CapBnd", KEPT),
            ("CapInh", 0),
            ("CapAmb", 0),
        ] {
            assert_eq!(caps.get(k).copied(), Some(want), "thread {name}: {k} {caps:?}");
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{status}"
    );

    // Still works: the TAP is deleted and overlayd (with only those capabilities) recreates it.
    h1.run("ip", &["link", "del", "ovl1"]);
    assert!(
        wait_until(Duration::from_secs(5), || h1.link_exists("ovl1")),
        "TAP not restored after the capability drop:\n{}",
        d1.log()
    );
    ping_ok(c1, c2.ip(), 3);
    assert!(d1.is_running(), "{}", d1.log());
}

/// The pid of the overlayd process under `d` (itself, or its child when started through a wrapper).
fn overlayd_pid(d: &Daemon) -> u32 {
    let comm = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let mut pid = d.pid();
    for _ in 0..3 {
        if comm(pid).trim() == "overlayd" {
            return pid;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        match children.split_whitespace().next().and_then(|c| c.parse().ok()) {
            Some(c) => pid = c,
            None => break,
        }
    }
    panic!("no overlayd process under pid {}", d.pid());
}
