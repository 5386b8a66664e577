//! §6 overload: a saturated data path (iperf3 both ways) causes no false death, and the admin API keeps
//! answering, probed from inside the host namespace by the `admin_prober` helper test.

use super::{log_len, members, membership_faults, one_at_a_time, rejoined};
use crate::common::overlay::{form_cluster, ping_ok};
use crate::common::testbed::{Host, Netns, Testbed};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Re-executed inside a host namespace by [`probe_admin`] (by its full name, `overload::admin_prober`): GET /v1/peers on `OVT_PROBE_ADDR` every 50 ms
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
            "overload::admin_prober",
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
    let rejoins = rejoined(&daemons, &marks);
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
