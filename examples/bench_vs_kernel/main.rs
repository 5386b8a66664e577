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

mod cpu_cost;
mod cpustat;
mod table;
#[path = "../../tests/common/testbed.rs"]
mod testbed;
mod traffic;

use cpu_cost::{background_load, per_unit, with_cpu};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;
use table::{table, to_json, uptime};
use testbed::{wait_until, Daemon, Netns, Testbed};
use traffic::{iperf, ping_p50, tcp_gbps, tcp_rx_bytes, udp_rx};

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
            "--seconds" => o.seconds = number_in(&mut args, "--seconds", 1..=3600)?,
            "--runs" => o.runs = number_in(&mut args, "--runs", 1..=20)?,
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

/// The value after `flag`: a whole number within `range`.
fn number_in(
    args: &mut impl Iterator<Item = String>,
    flag: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, String> {
    let v = args.next().ok_or(format!("{flag} needs a value"))?;
    v.parse()
        .ok()
        .filter(|s| range.contains(s))
        .ok_or_else(|| format!("{flag}: expected {}..={}, got {v}", range.start(), range.end()))
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
