//! overlayd vs kernel VXLAN, side by side on the same two-host namespace testbed.
//!
//! `cargo run --release --example bench_vs_kernel -- [--seconds N] [--runs N] [--json] [--only kernel|overlayd] [--kernel-sw-csum]`
//! (as root). Builds `overlayd`, then twice creates the testbed of `tests/common/testbed.rs` (two hosts on a
//! veth/bridge underlay, one container behind each): once with kernel VXLAN devices on both hosts, once with
//! overlayd on both. In each it measures, container 1 → container 2:
//!
//! - TCP, 1 stream and 4 streams (`iperf3 -J`, receiver-side Gbit/s);
//! - UDP with 64-byte payloads at unlimited rate (`iperf3 -u -l 64 -b 0`, receiver-side packets/s);
//! - ping RTT p50 (`ping -c 100 -i 0.01`, per-packet times).
//!
//! and prints one table with overlayd ÷ kernel for each (for RTT, lower is better, so the ratio is kernel ÷
//! overlayd: above 1 means overlayd is faster there too). Everything it creates is deleted by the testbed's
//! Drop, also on failure. Traffic never leaves the namespaces.
//!
//! Underlay fairness: `Host::add_kernel_vxlan` turns TX checksum offload (and with it TSO) off on the host's
//! underlay veth, because overlayd *interoperating* with kernel VXLAN needs real inner checksums on the wire.
//! Between two kernel VTEPs that is not needed, and it costs the kernel ~3×. So by default this benchmark turns it
//! back on (`ethtool -K eth0 tx on`): both runs then use the same, default veth underlay, on which GSO packets —
//! the kernel's tunnel GSO and overlayd's UDP GSO alike — cross unsegmented. `--kernel-sw-csum` keeps the
//! testbed's setting instead (kernel checksums and segments in software; a much weaker baseline).

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: fail loudly

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

#[derive(Debug, Clone)]
struct Opts {
    seconds: u32,
    runs: u32,
    /// Use this overlayd binary instead of building one (A/B comparisons of two builds).
    overlayd: Option<PathBuf>,
    json: bool,
    only: Option<Mode>,
    kernel_sw_csum: bool,
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
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\nusage: bench_vs_kernel [--seconds N] [--runs N] [--json] [--only kernel|overlayd] [--kernel-sw-csum] [--overlayd PATH]");
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
        runs: 1,
        overlayd: None,
        json: false,
        only: None,
        kernel_sw_csum: false,
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
            "--json" => o.json = true,
            "--kernel-sw-csum" => o.kernel_sw_csum = true,
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
                if !opts.kernel_sw_csum {
                    h.exec("ethtool", &["-K", "eth0", "tx", "on"])
                        .map_err(|e| e.to_string())?;
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
    let server = c2.spawn("iperf3", &["-s", "-p", IPERF_PORT]);
    // The server is up once it accepts a connection; a 1-second test doubles as warm-up.
    if !wait_until(Duration::from_secs(10), || iperf(c1, c2, &["-t", "1"]).is_ok()) {
        return Err(format!(
            "{}: iperf3 server in container 2 did not answer:\n{}",
            mode.name(),
            server.log()
        ));
    }
    let secs = opts.seconds.to_string();
    let mut r = Results::default();

    note(opts, &format!("{}: TCP, 1 stream, {secs} s", mode.name()));
    r.tcp1_gbps = report(
        mode,
        "TCP 1 stream",
        iperf(c1, c2, &["-t", &secs]).and_then(|j| tcp_gbps(&j)),
    );
    note(opts, &format!("{}: TCP, 4 streams, {secs} s", mode.name()));
    r.tcp4_gbps = report(
        mode,
        "TCP 4 streams",
        iperf(c1, c2, &["-t", &secs, "-P", "4"]).and_then(|j| tcp_gbps(&j)),
    );
    note(
        opts,
        &format!("{}: UDP, 64-byte payloads, unlimited rate, {secs} s", mode.name()),
    );
    r.udp64_pps = report(
        mode,
        "UDP 64 B",
        iperf(c1, c2, &["-t", &secs, "-u", "-l", "64", "-b", "0"]).and_then(|j| udp_rx_pps(&j)),
    );
    note(opts, &format!("{}: ping RTT", mode.name()));
    r.ping_p50_ms = report(mode, "ping", ping_p50(c1, c2));

    let _ = server.signal("TERM");
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
            "TCP1 {} Gbit/s, TCP4 {} Gbit/s, UDP64 {} kpps, ping p50 {} ms",
            f(self.tcp1_gbps, 1.0, 2),
            f(self.tcp4_gbps, 1.0, 2),
            f(self.udp64_pps, 1e-3, 1),
            f(self.ping_p50_ms, 1.0, 3)
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
    }
}

fn report(mode: Mode, what: &str, r: Result<f64, String>) -> Option<f64> {
    r.map_err(|e| eprintln!("  {} {what}: {e}", mode.name())).ok()
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

fn tcp_gbps(v: &Value) -> Result<f64, String> {
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received.bits_per_second".into())
}

/// Receiver-side packets/s: packets the client sent minus those the server reported lost, over the test time.
fn udp_rx_pps(v: &Value) -> Result<f64, String> {
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
    Ok((packets - lost).max(0.0) / secs)
}

fn ping_p50(c1: &Container, c2: &Container) -> Result<f64, String> {
    let out = c1
        .exec(
            "ping",
            &["-n", "-c", "100", "-i", "0.01", "-W", "1", &c2.ip().to_string()],
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

/// (test, unit, kernel, overlayd, ratio)
type Row = (&'static str, &'static str, Option<f64>, Option<f64>, Option<f64>);

fn rows(k: &Results, o: &Results) -> [Row; 4] {
    [
        (
            "TCP 1 stream",
            "Gbit/s",
            k.tcp1_gbps,
            o.tcp1_gbps,
            ratio(o.tcp1_gbps, k.tcp1_gbps, false),
        ),
        (
            "TCP 4 streams",
            "Gbit/s",
            k.tcp4_gbps,
            o.tcp4_gbps,
            ratio(o.tcp4_gbps, k.tcp4_gbps, false),
        ),
        (
            "UDP 64 B",
            "kpps",
            k.udp64_pps.map(|p| p / 1e3),
            o.udp64_pps.map(|p| p / 1e3),
            ratio(o.udp64_pps, k.udp64_pps, false),
        ),
        (
            "ping RTT p50",
            "ms",
            k.ping_p50_ms,
            o.ping_p50_ms,
            ratio(o.ping_p50_ms, k.ping_p50_ms, true),
        ),
    ]
}

fn table(opts: &Opts, k: &Results, o: &Results) -> String {
    let f = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} s per test, median of {} run(s), {} cores, kernel {}{}",
        opts.seconds,
        opts.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release(),
        if opts.kernel_sw_csum {
            ", kernel hosts with software underlay checksums (--kernel-sw-csum)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| {:<14} | {:<6} | {:>10} | {:>10} | {:>16} |",
        "test", "unit", "kernel", "overlayd", "overlayd÷kernel"
    );
    let _ = writeln!(s, "|{:-<16}|{:-<8}|{:->12}|{:->12}|{:->18}|", "", "", "", "", "");
    for (name, unit, kv, ov, r) in rows(k, o) {
        let prec = if unit == "ms" { 3 } else { 2 };
        let _ = writeln!(
            s,
            "| {name:<14} | {unit:<6} | {:>10} | {:>10} | {:>16} |",
            f(kv, prec),
            f(ov, prec),
            f(r, 2)
        );
    }
    let _ = writeln!(
        s,
        "(ping ratio is kernel÷overlayd, so above 1 is better for overlayd everywhere)"
    );
    s
}

fn to_json(opts: &Opts, k: &Results, o: &Results) -> String {
    let row = |(name, unit, kv, ov, r): Row| serde_json::json!({"test": name, "unit": unit, "kernel": kv, "overlayd": ov, "ratio": r});
    let v = serde_json::json!({
        "seconds": opts.seconds,
        "runs": opts.runs,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel_release": kernel_release(),
        "kernel_sw_csum": opts.kernel_sw_csum,
        "results": rows(k, o).into_iter().map(row).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}
