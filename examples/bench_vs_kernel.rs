//! overlayd vs kernel VXLAN, side by side on the same two-host namespace testbed.
//!
//! `cargo run --release --example bench_vs_kernel -- [--seconds N] [--runs N] [--json] [--only kernel|overlayd]
//! [--kernel-sw-csum] [--overlayd PATH] [--workers N] [--busy-poll-us N] [--overlayd-arg ARG]…
//! [--tests tcp1,tcp4,udp64,ping]` (as root; `--tests` runs only the listed tests, the others print "-"). Builds `overlayd`, then twice creates the testbed of `tests/common/testbed.rs` (two hosts on a
//! veth/bridge underlay, one container behind each): once with kernel VXLAN devices on both hosts, once with
//! overlayd on both. In each it measures, container 1 → container 2:
//!
//! - TCP, 1 stream and 4 streams (`iperf3 -J`, receiver-side Gbit/s);
//! - UDP with 64-byte payloads at unlimited rate (`iperf3 -u -l 64 -b 0`, receiver-side packets/s);
//! - ping RTT p50 (`ping -c 100 -i 0.01`, per-packet times).
//!
//! and prints one table with overlayd ÷ kernel for each (for RTT, lower is better, so the ratio is kernel ÷
//! overlayd: above 1 means overlayd is faster there too).
//!
//! CPU cost (issue 13): for each throughput test, the CPU time of the whole system (all CPUs: user, nice,
//! system, irq and softirq jiffies of /proc/stat's `cpu` line; idle, iowait and steal left out, guest already
//! inside user) spent while the iperf3 client ran, divided by what the receiver got: CPU-seconds per GB for
//! TCP, per million packets for UDP. It counts both daemons (or the kernel's VXLAN work), iperf3 and anything
//! else running on the machine, so run it on a quiet machine; each run's background load (the same figure
//! over one idle second before the tests) is printed on stderr. Its ratio is overlayd ÷ kernel: lower is
//! better. Each run's numbers go to stderr, the table holds medians (default 5 runs). Everything it creates is deleted by the testbed's
//! Drop, also on failure. Traffic never leaves the namespaces.
//!
//! Underlay fairness: both runs use the same, default veth underlay (`Host::add_kernel_vxlan` keeps the veth's
//! offloads), on which GSO packets — the kernel's tunnel GSO and overlayd's UDP GSO alike — cross unsegmented.
//! `--kernel-sw-csum` turns TX checksum offload (and with it TSO) off on the kernel hosts' veths instead
//! (`Host::kernel_tx_csum_off`: the kernel checksums and segments in software; a much weaker baseline).

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: fail loudly
#![cfg_attr(test, allow(dead_code))] // `cargo test` builds it for the cpustat parser tests only

#[path = "../tests/common/testbed.rs"]
mod testbed;

use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;
use testbed::{wait_until, Container, Daemon, Netns, Testbed};

const VNI: u32 = 1;
const PORT: u16 = 4789;
const IPERF_PORT: &str = "5201";
/// Pings of the RTT test, 10 ms apart.
const PINGS: u32 = 100;

#[derive(Debug, Clone)]
struct Opts {
    seconds: u32,
    runs: u32,
    /// Use this overlayd binary instead of building one (A/B comparisons of two builds).
    overlayd: Option<PathBuf>,
    json: bool,
    only: Option<Mode>,
    kernel_sw_csum: bool,
    /// The tests to run (`--tests`; default all): skipping the others makes a ping-only A/B quick.
    tests: Tests,
    /// Extra overlayd arguments: `--workers N`, `--busy-poll-us N` and each `--overlayd-arg ARG`, in order.
    /// Only what is given is passed, so builds without those flags can still be measured.
    overlayd_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tests {
    tcp1: bool,
    tcp4: bool,
    udp64: bool,
    ping: bool,
}

impl Tests {
    const ALL: Tests = Tests {
        tcp1: true,
        tcp4: true,
        udp64: true,
        ping: true,
    };

    fn parse(list: &str) -> Result<Tests, String> {
        let mut t = Tests {
            tcp1: false,
            tcp4: false,
            udp64: false,
            ping: false,
        };
        for name in list.split(',') {
            match name {
                "tcp1" => t.tcp1 = true,
                "tcp4" => t.tcp4 = true,
                "udp64" => t.udp64 = true,
                "ping" => t.ping = true,
                other => {
                    return Err(format!(
                        "--tests: expected tcp1, tcp4, udp64 or ping, got {other:?}"
                    ))
                }
            }
        }
        Ok(t)
    }

    fn iperf(self) -> bool {
        self.tcp1 || self.tcp4 || self.udp64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Kernel,
    Overlayd,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Overlayd => "overlayd",
        }
    }
}

/// One mode's measurements; `None` where a measurement failed (printed as "-").
#[derive(Debug, Default, Clone)]
struct Results {
    tcp1_gbps: Option<f64>,
    tcp4_gbps: Option<f64>,
    udp64_pps: Option<f64>,
    ping_p50_ms: Option<f64>,
    /// Whole-system CPU-seconds per GB received (TCP) or per million packets received (UDP).
    tcp1_cpu: Option<f64>,
    tcp4_cpu: Option<f64>,
    udp64_cpu: Option<f64>,
    /// Busy fraction of all CPUs (0..=1) over one second before the tests: the machine's background load.
    background: Option<f64>,
    /// cpuidle entries (all CPUs, all states but polling) per ping during the ping test.
    idle_per_ping: Option<f64>,
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\nusage: bench_vs_kernel [--seconds N] [--runs N] [--json] [--only kernel|overlayd] [--kernel-sw-csum] [--overlayd PATH] [--workers N] [--busy-poll-us N] [--overlayd-arg ARG]... [--tests tcp1,tcp4,udp64,ping]");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbench_vs_kernel failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 5,
        runs: 5,
        overlayd: None,
        json: false,
        only: None,
        kernel_sw_csum: false,
        tests: Tests::ALL,
        overlayd_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a value")?;
                o.seconds = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| format!("--seconds: expected 1..=3600, got {v}"))?;
            }
            "--runs" => {
                let v = args.next().ok_or("--runs needs a value")?;
                o.runs = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=20).contains(s))
                    .ok_or_else(|| format!("--runs: expected 1..=20, got {v}"))?;
            }
            "--overlayd" => o.overlayd = Some(args.next().ok_or("--overlayd needs a path")?.into()),
            "--workers" | "--busy-poll-us" => {
                let v = args.next().ok_or(format!("{a} needs a value"))?;
                v.parse::<u32>()
                    .map_err(|_| format!("{a}: expected a number, got {v}"))?;
                o.overlayd_args.extend([a.clone(), v]);
            }
            "--overlayd-arg" => o
                .overlayd_args
                .push(args.next().ok_or("--overlayd-arg needs a value")?),
            "--json" => o.json = true,
            "--kernel-sw-csum" => o.kernel_sw_csum = true,
            "--tests" => o.tests = Tests::parse(&args.next().ok_or("--tests needs a list")?)?,
            "--only" => {
                o.only = match args.next().as_deref() {
                    Some("kernel") => Some(Mode::Kernel),
                    Some("overlayd") => Some(Mode::Overlayd),
                    other => return Err(format!("--only: expected kernel or overlayd, got {other:?}")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn run(opts: &Opts) -> Result<(), String> {
    for tool in ["iperf3", "ping", "ethtool"] {
        if Command::new(tool).arg("-V").output().is_err()
            && Command::new(tool).arg("--version").output().is_err()
        {
            return Err(format!("{tool} is missing (apt-get install {tool})"));
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: not a release build; numbers will be meaningless (use cargo run --release)");
    }
    let overlayd = match &opts.overlayd {
        Some(p) => p.clone(),
        None => testbed::build_binaries()?.join("overlayd"),
    }
    .to_string_lossy()
    .into_owned();
    // Runs alternate kernel, overlayd, kernel, … so slow drifts in background load hit both alike; each cell
    // of the table is the median over the runs.
    let (mut ks, mut os) = (Vec::new(), Vec::new());
    for run in 1..=opts.runs {
        if opts.runs > 1 {
            note(opts, &format!("run {run} of {}", opts.runs));
        }
        if opts.only != Some(Mode::Overlayd) {
            let r = measure(Mode::Kernel, opts, &overlayd)?;
            note(opts, &format!("run {run} kernel: {}", r.summary()));
            ks.push(r);
        }
        if opts.only != Some(Mode::Kernel) {
            let r = measure(Mode::Overlayd, opts, &overlayd)?;
            note(opts, &format!("run {run} overlayd: {}", r.summary()));
            os.push(r);
        }
    }
    let (kernel, ours) = (median(&ks), median(&os));
    if opts.json {
        println!("{}", to_json(opts, &kernel, &ours));
    } else {
        print!("{}", table(opts, &kernel, &ours));
    }
    Ok(())
}

fn note(opts: &Opts, msg: &str) {
    // Progress goes to stderr so `--json` output stays parseable.
    let _ = opts;
    eprintln!("• {msg}");
}

fn measure(mode: Mode, opts: &Opts, overlayd: &str) -> Result<Results, String> {
    note(opts, &format!("{}: building the two-host testbed", mode.name()));
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (c1, c2) = (tb.container(1), tb.container(2));
    let mut daemons: Vec<Daemon> = Vec::new();
    match mode {
        Mode::Kernel => {
            for (h, peer) in [(h1, h2), (h2, h1)] {
                h.add_kernel_vxlan(VNI, PORT, &[peer.underlay_ip()]);
                if opts.kernel_sw_csum {
                    h.kernel_tx_csum_off();
                }
            }
        }
        Mode::Overlayd => {
            // Builds with an admin socket need one per daemon (the namespaces share one filesystem); older
            // builds given with --overlayd do not know the flag.
            let has_socket = testbed::run_cmd(Command::new(overlayd).arg("--help"))
                .is_ok_and(|h| h.contains("--admin-socket"));
            for (h, peer) in [(h1, h2), (h2, h1)] {
                let (local, peer) = (h.underlay_ip().to_string(), peer.underlay_ip().to_string());
                let (vni, port) = (VNI.to_string(), PORT.to_string());
                let sock = h.admin_socket().to_string_lossy().into_owned();
                let state = h
                    .log_dir()
                    .join(format!("state-{}", h.ns()))
                    .display()
                    .to_string();
                let mut args = vec![
                    "--peer",
                    &peer,
                    "--local",
                    &local,
                    "--vni",
                    &vni,
                    "--port",
                    &port,
                    "--state-dir",
                    &state,
                ];
                if has_socket {
                    args.extend(["--admin-socket", &sock]);
                }
                args.extend(opts.overlayd_args.iter().map(String::as_str));
                let mut d = h.spawn(overlayd, &args);
                let up = wait_until(Duration::from_secs(10), || {
                    !d.is_running() || h.link_exists("ovl1")
                });
                if !up || !d.is_running() {
                    return Err(format!(
                        "overlayd on host {} did not come up:\n{}",
                        h.index(),
                        d.log()
                    ));
                }
                daemons.push(d);
            }
        }
    }
    if !wait_until(Duration::from_secs(10), || c1.ping(c2.ip(), 1).is_ok()) {
        return Err(format!(
            "{}: no ping reply from container 2 within 10 s",
            mode.name()
        ));
    }
    let t = opts.tests;
    let server = t.iperf().then(|| c2.spawn("iperf3", &["-s", "-p", IPERF_PORT]));
    // The server is up once it accepts a connection; a 1-second test doubles as warm-up.
    if let Some(server) = &server {
        if !wait_until(Duration::from_secs(10), || iperf(c1, c2, &["-t", "1"]).is_ok()) {
            return Err(format!(
                "{}: iperf3 server in container 2 did not answer:\n{}",
                mode.name(),
                server.log()
            ));
        }
    }
    let secs = opts.seconds.to_string();
    let mut r = Results {
        background: background_load(),
        ..Results::default()
    };

    if t.tcp1 {
        note(opts, &format!("{}: TCP, 1 stream, {secs} s", mode.name()));
        (r.tcp1_gbps, r.tcp1_cpu) = split(report(
            mode,
            "TCP 1 stream",
            with_cpu(|| iperf(c1, c2, &["-t", &secs]))
                .and_then(|(j, cpu)| Ok((tcp_gbps(&j)?, per_unit(cpu, tcp_rx_bytes(&j)? / 1e9)?))),
        ));
    }
    if t.tcp4 {
        note(opts, &format!("{}: TCP, 4 streams, {secs} s", mode.name()));
        (r.tcp4_gbps, r.tcp4_cpu) = split(report(
            mode,
            "TCP 4 streams",
            with_cpu(|| iperf(c1, c2, &["-t", &secs, "-P", "4"]))
                .and_then(|(j, cpu)| Ok((tcp_gbps(&j)?, per_unit(cpu, tcp_rx_bytes(&j)? / 1e9)?))),
        ));
    }
    if t.udp64 {
        note(
            opts,
            &format!("{}: UDP, 64-byte payloads, unlimited rate, {secs} s", mode.name()),
        );
        (r.udp64_pps, r.udp64_cpu) = split(report(
            mode,
            "UDP 64 B",
            with_cpu(|| iperf(c1, c2, &["-t", &secs, "-u", "-l", "64", "-b", "0"])).and_then(|(j, cpu)| {
                let (pps, packets) = udp_rx(&j)?;
                Ok((pps, per_unit(cpu, packets / 1e6)?))
            }),
        ));
    }
    if t.ping {
        note(opts, &format!("{}: ping RTT", mode.name()));
        let halts = cpustat::idle_entries();
        r.ping_p50_ms = report(mode, "ping", ping_p50(c1, c2));
        // Where the RTT goes (README "Latency and busy-poll"): how often a vCPU went idle per ping. Each idle
        // entry is a later wake-up some packet of a round trip may have to wait for.
        r.idle_per_ping = match (halts, cpustat::idle_entries()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / PINGS as f64),
            _ => None,
        };
    }

    if let Some(server) = &server {
        let _ = server.signal("TERM");
    }
    for d in &mut daemons {
        let _ = d.signal("TERM");
        if d.wait_timeout(Duration::from_secs(5)).is_none() {
            eprintln!("  overlayd did not exit within 5 s after SIGTERM");
        }
    }
    drop(tb);
    Ok(r)
}

impl Results {
    /// One line for the progress output, so the spread behind each median is visible.
    fn summary(&self) -> String {
        let f = |v: Option<f64>, scale: f64, prec: usize| {
            v.map_or_else(|| "-".into(), |v| format!("{:.prec$}", v * scale))
        };
        format!(
            "TCP1 {} Gbit/s ({} CPU-s/GB), TCP4 {} Gbit/s ({} CPU-s/GB), UDP64 {} kpps ({} CPU-s/Mpkt), \
             ping p50 {} ms ({} vCPU idle entries per ping), background load {}%, {}",
            f(self.tcp1_gbps, 1.0, 2),
            f(self.tcp1_cpu, 1.0, 3),
            f(self.tcp4_gbps, 1.0, 2),
            f(self.tcp4_cpu, 1.0, 3),
            f(self.udp64_pps, 1e-3, 1),
            f(self.udp64_cpu, 1.0, 2),
            f(self.ping_p50_ms, 1.0, 3),
            f(self.idle_per_ping, 1.0, 1),
            f(self.background, 100.0, 0),
            uptime()
        )
    }
}

/// Per-metric median over runs (upper median for an even count), ignoring failed measurements.
fn median(rs: &[Results]) -> Results {
    let m = |f: fn(&Results) -> Option<f64>| {
        let mut v: Vec<f64> = rs.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Results {
        tcp1_gbps: m(|r| r.tcp1_gbps),
        tcp4_gbps: m(|r| r.tcp4_gbps),
        udp64_pps: m(|r| r.udp64_pps),
        ping_p50_ms: m(|r| r.ping_p50_ms),
        tcp1_cpu: m(|r| r.tcp1_cpu),
        tcp4_cpu: m(|r| r.tcp4_cpu),
        udp64_cpu: m(|r| r.udp64_cpu),
        background: m(|r| r.background),
        idle_per_ping: m(|r| r.idle_per_ping),
    }
}

fn report<T>(mode: Mode, what: &str, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| eprintln!("  {} {what}: {e}", mode.name())).ok()
}

fn split(r: Option<(f64, f64)>) -> (Option<f64>, Option<f64>) {
    (r.map(|r| r.0), r.map(|r| r.1))
}

/// Run `f` and return its result with the whole-system CPU-seconds spent meanwhile (all CPUs).
fn with_cpu<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, f64), String> {
    let before = cpustat::read()?;
    let v = f()?;
    let after = cpustat::read()?;
    Ok((v, after.busy_seconds_since(&before, cpustat::clock_ticks())))
}

/// CPU-seconds per unit carried; an error when nothing was carried.
fn per_unit(cpu_s: f64, units: f64) -> Result<f64, String> {
    if units > 0.0 {
        Ok(cpu_s / units)
    } else {
        Err("nothing received: no CPU cost per unit".into())
    }
}

/// Busy fraction of all CPUs over one second with no test traffic.
fn background_load() -> Option<f64> {
    let (before, t0) = (cpustat::read().ok()?, std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (after, dt) = (cpustat::read().ok()?, t0.elapsed().as_secs_f64());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Some(after.busy_seconds_since(&before, cpustat::clock_ticks()) / (dt * cpus))
}

fn iperf(c1: &Container, c2: &Container, extra: &[&str]) -> Result<Value, String> {
    let ip = c2.ip().to_string();
    let mut args = vec!["-c", ip.as_str(), "-p", IPERF_PORT, "-J"];
    args.extend_from_slice(extra);
    // iperf3 -J prints its JSON (including an "error" member) on stdout, also when it exits non-zero.
    let out = match c1.exec("iperf3", &args) {
        Ok(o) => o,
        Err(e) if !e.stdout.trim().is_empty() => e.stdout,
        Err(e) => return Err(e.to_string()),
    };
    let v: Value =
        serde_json::from_str(&out).map_err(|e| format!("iperf3 output is not JSON ({e}): {out}"))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3: {err}"));
    }
    Ok(v)
}

fn tcp_rx_bytes(v: &Value) -> Result<f64, String> {
    v.pointer("/end/sum_received/bytes")
        .and_then(Value::as_f64)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received.bytes".into())
}

fn tcp_gbps(v: &Value) -> Result<f64, String> {
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received.bits_per_second".into())
}

/// Receiver-side (packets/s, packets): packets the client sent minus those the server reported lost, per
/// second of the test and in total.
fn udp_rx(v: &Value) -> Result<(f64, f64), String> {
    let sum = v.pointer("/end/sum").ok_or("iperf3 JSON has no end.sum")?;
    let get = |k: &str| {
        sum.get(k)
            .and_then(Value::as_f64)
            .ok_or(format!("iperf3 end.sum has no {k}"))
    };
    let (packets, lost, secs) = (get("packets")?, get("lost_packets")?, get("seconds")?);
    if secs <= 0.0 {
        return Err("iperf3 reported a zero-length test".into());
    }
    let got = (packets - lost).max(0.0);
    Ok((got / secs, got))
}

fn ping_p50(c1: &Container, c2: &Container) -> Result<f64, String> {
    let out = c1
        .exec(
            "ping",
            &[
                "-n",
                "-c",
                &PINGS.to_string(),
                "-i",
                "0.01",
                "-W",
                "1",
                &c2.ip().to_string(),
            ],
        )
        .map_err(|e| e.to_string())?;
    let mut times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split_once("time=")?.1.split_whitespace().next()?.parse().ok())
        .collect();
    if times.is_empty() {
        return Err(format!("no replies: {out}"));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn ratio(ours: Option<f64>, kernel: Option<f64>, lower_is_better: bool) -> Option<f64> {
    let (o, k) = (ours?, kernel?);
    let r = if lower_is_better { k / o } else { o / k };
    r.is_finite().then_some(r)
}

/// One line of the table: a test, its figure and its CPU cost, each for kernel, overlayd and the ratio.
#[derive(Debug, Clone, Copy)]
struct Row {
    test: &'static str,
    unit: &'static str,
    kernel: Option<f64>,
    overlayd: Option<f64>,
    ratio: Option<f64>,
    cpu_unit: &'static str,
    cpu_kernel: Option<f64>,
    cpu_overlayd: Option<f64>,
    /// overlayd ÷ kernel: lower is better.
    cpu_ratio: Option<f64>,
}

fn rows(k: &Results, o: &Results) -> [Row; 4] {
    let cpu = |unit, kc: Option<f64>, oc: Option<f64>| (unit, kc, oc, ratio(oc, kc, false));
    let row = |test, unit, kv, ov, r, (cpu_unit, cpu_kernel, cpu_overlayd, cpu_ratio)| Row {
        test,
        unit,
        kernel: kv,
        overlayd: ov,
        ratio: r,
        cpu_unit,
        cpu_kernel,
        cpu_overlayd,
        cpu_ratio,
    };
    [
        row(
            "TCP 1 stream",
            "Gbit/s",
            k.tcp1_gbps,
            o.tcp1_gbps,
            ratio(o.tcp1_gbps, k.tcp1_gbps, false),
            cpu("CPU-s/GB", k.tcp1_cpu, o.tcp1_cpu),
        ),
        row(
            "TCP 4 streams",
            "Gbit/s",
            k.tcp4_gbps,
            o.tcp4_gbps,
            ratio(o.tcp4_gbps, k.tcp4_gbps, false),
            cpu("CPU-s/GB", k.tcp4_cpu, o.tcp4_cpu),
        ),
        row(
            "UDP 64 B",
            "kpps",
            k.udp64_pps.map(|p| p / 1e3),
            o.udp64_pps.map(|p| p / 1e3),
            ratio(o.udp64_pps, k.udp64_pps, false),
            cpu("CPU-s/Mpkt", k.udp64_cpu, o.udp64_cpu),
        ),
        row(
            "ping RTT p50",
            "ms",
            k.ping_p50_ms,
            o.ping_p50_ms,
            ratio(o.ping_p50_ms, k.ping_p50_ms, true),
            ("", None, None, None),
        ),
    ]
}

fn table(opts: &Opts, k: &Results, o: &Results) -> String {
    let f = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} s per test, median of {} run(s), {} cores, kernel {}{}{}",
        opts.seconds,
        opts.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release(),
        if opts.kernel_sw_csum {
            ", kernel hosts with software underlay checksums (--kernel-sw-csum)"
        } else {
            ""
        },
        if opts.overlayd_args.is_empty() {
            String::new()
        } else {
            format!(", overlayd {}", opts.overlayd_args.join(" "))
        }
    );
    let _ = writeln!(
        s,
        "| {:<14} | {:<6} | {:>10} | {:>10} | {:>16} | {:<10} | {:>10} | {:>10} | {:>16} |",
        "test",
        "unit",
        "kernel",
        "overlayd",
        "overlayd÷kernel",
        "CPU cost",
        "kernel",
        "overlayd",
        "overlayd÷kernel"
    );
    let _ = writeln!(
        s,
        "|{:-<16}|{:-<8}|{:->12}|{:->12}|{:->18}|{:-<12}|{:->12}|{:->12}|{:->18}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in rows(k, o) {
        let prec = if r.unit == "ms" { 3 } else { 2 };
        let _ = writeln!(
            s,
            "| {:<14} | {:<6} | {:>10} | {:>10} | {:>16} | {:<10} | {:>10} | {:>10} | {:>16} |",
            r.test,
            r.unit,
            f(r.kernel, prec),
            f(r.overlayd, prec),
            f(r.ratio, 2),
            r.cpu_unit,
            f(r.cpu_kernel, 3),
            f(r.cpu_overlayd, 3),
            f(r.cpu_ratio, 2)
        );
    }
    let _ = writeln!(
        s,
        "(ping ratio is kernel÷overlayd, so above 1 is better for overlayd in the first ratio column everywhere.\n \
         CPU cost: whole-system CPU-seconds (all CPUs; user+nice+system+irq+softirq of /proc/stat, not idle,\n \
         iowait or steal) while the test ran, per GB (TCP) or million packets (UDP) received; lower is better,\n \
         so a CPU overlayd÷kernel below 1 is better for overlayd. Median background load before the tests: {}%.)",
        f(o.background.or(k.background).map(|b| b * 100.0), 0)
    );
    s
}

fn to_json(opts: &Opts, k: &Results, o: &Results) -> String {
    let row = |r: Row| {
        serde_json::json!({"test": r.test, "unit": r.unit, "kernel": r.kernel, "overlayd": r.overlayd,
            "ratio": r.ratio, "cpu_unit": r.cpu_unit, "cpu_kernel": r.cpu_kernel,
            "cpu_overlayd": r.cpu_overlayd, "cpu_ratio": r.cpu_ratio})
    };
    let v = serde_json::json!({
        "seconds": opts.seconds,
        "runs": opts.runs,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel_release": kernel_release(),
        "kernel_sw_csum": opts.kernel_sw_csum,
        "overlayd_args": opts.overlayd_args,
        "results": rows(k, o).into_iter().map(row).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap()
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "load ?".into(),
        |s| {
            format!(
                "load {}",
                s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        },
    )
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// Whole-system CPU time from /proc/stat (proc(5)): the first line, `cpu  user nice system idle iowait irq
/// softirq steal guest guest_nice`, in clock ticks summed over all CPUs.
mod cpustat {
    /// The `cpu` line's busy and idle ticks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CpuTimes {
        /// user + nice + system + irq + softirq: time the CPUs worked for this machine. `guest` and
        /// `guest_nice` are already inside user and nice, so they are not added again.
        pub busy: u64,
        /// idle + iowait + steal: time the CPUs did not work for us (steal: the hypervisor ran someone else).
        pub not_busy: u64,
    }

    impl CpuTimes {
        /// CPU-seconds of busy time between `earlier` and `self` (0 if the counters went backwards).
        pub fn busy_seconds_since(&self, earlier: &CpuTimes, ticks_per_s: u64) -> f64 {
            self.busy.saturating_sub(earlier.busy) as f64 / ticks_per_s.max(1) as f64
        }
    }

    /// Parse the aggregate `cpu` line of /proc/stat's text. Kernels before 2.6.33 give fewer columns: at least
    /// user, nice, system and idle are required, missing later ones count as 0.
    pub fn parse(stat: &str) -> Result<CpuTimes, String> {
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some("cpu"))
            .ok_or("/proc/stat has no aggregate `cpu` line")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| {
                f.parse::<u64>()
                    .map_err(|_| format!("/proc/stat: bad number {f:?} in {line:?}"))
            })
            .collect::<Result<_, _>>()?;
        if v.len() < 4 {
            return Err(format!("/proc/stat: too few columns in {line:?}"));
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let (user, nice, system, idle, iowait, irq, softirq, steal) =
            (at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
        Ok(CpuTimes {
            busy: user
                .saturating_add(nice)
                .saturating_add(system)
                .saturating_add(irq)
                .saturating_add(softirq),
            not_busy: idle.saturating_add(iowait).saturating_add(steal),
        })
    }

    /// How many times the CPUs entered an idle state (cpuidle `usage` of every state but `POLL`, summed
    /// over CPUs); `None` without cpuidle in sysfs.
    pub fn idle_entries() -> Option<u64> {
        let mut total = None;
        for cpu in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
            let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
                continue;
            };
            for st in states.flatten() {
                let read = |f: &str| std::fs::read_to_string(st.path().join(f)).ok();
                if read("name").is_some_and(|n| n.trim() == "POLL") {
                    continue;
                }
                if let Some(u) = read("usage").and_then(|u| u.trim().parse::<u64>().ok()) {
                    total = Some(total.unwrap_or(0) + u);
                }
            }
        }
        total
    }

    pub fn read() -> Result<CpuTimes, String> {
        let s = std::fs::read_to_string("/proc/stat").map_err(|e| format!("cannot read /proc/stat: {e}"))?;
        parse(&s)
    }

    /// Clock ticks per second of /proc/stat (USER_HZ, 100 on Linux unless built otherwise).
    pub fn clock_ticks() -> u64 {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|t: &u64| *t > 0)
            .unwrap_or(100)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_the_aggregate_line() {
            let stat = "cpu  4705 150 1120 16250 520 30 45 70 200 10\n\
                        cpu0 2000 50 500 8000 200 10 20 30 100 5\n\
                        intr 12345 0 0\nctxt 99\n";
            let t = parse(stat).unwrap();
            // user + nice + system + irq + softirq; guest (200) and guest_nice (10) are inside user/nice.
            assert_eq!(t.busy, 4705 + 150 + 1120 + 30 + 45);
            assert_eq!(t.not_busy, 16250 + 520 + 70);
        }

        #[test]
        fn old_kernels_and_errors() {
            let t = parse("cpu 1 2 3 4\n").unwrap();
            assert_eq!((t.busy, t.not_busy), (6, 4));
            assert!(
                parse("cpu0 1 2 3 4\n").is_err(),
                "per-CPU lines are not the aggregate"
            );
            assert!(parse("cpu 1 2 3\n").is_err());
            assert!(parse("cpu 1 2 x 4\n").is_err());
            assert!(parse("").is_err());
            assert!(parse("cpu -1 2 3 4\n").is_err());
        }

        #[test]
        fn busy_seconds() {
            let a = CpuTimes {
                busy: 1000,
                not_busy: 0,
            };
            let b = CpuTimes {
                busy: 1250,
                not_busy: 50,
            };
            assert!((b.busy_seconds_since(&a, 100) - 2.5).abs() < 1e-9);
            assert_eq!(a.busy_seconds_since(&b, 100), 0.0, "counters never go backwards");
        }

        proptest::proptest! {
            #[test]
            fn never_panics(s in "\\PC{0,200}") {
                let _ = parse(&s);
            }

            #[test]
            fn sums_any_columns(v in proptest::collection::vec(0u64..1u64 << 40, 4..11)) {
                let line = format!("cpu  {}\n", v.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
                let t = parse(&line).unwrap();
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                proptest::prop_assert_eq!(t.busy, at(0) + at(1) + at(2) + at(5) + at(6));
                proptest::prop_assert_eq!(t.not_busy, at(3) + at(4) + at(7));
            }
        }
    }
}
