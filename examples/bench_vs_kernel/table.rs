//! The result table: overlayd against kernel per test with their ratios, as text or JSON, and the machine
//! facts printed with it.

use std::fmt::Write as _;

use crate::{Opts, Results};

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

/// One figure of [`Results`]: a test's throughput or RTT, or its CPU cost.
type Figure = fn(&Results) -> Option<f64>;

fn rows(k: &Results, o: &Results) -> [Row; 4] {
    // `per`: the figure divided by it is in `unit` (the ratio is of the figures as measured). `cpu`: the CPU
    // cost's unit and figure (none for ping).
    let row = |test, unit, per: f64, figure: Figure, lower_is_better, cpu: Option<(&'static str, Figure)>| {
        let (cpu_unit, cpu_kernel, cpu_overlayd) = cpu.map_or(("", None, None), |(u, c)| (u, c(k), c(o)));
        Row {
            test,
            unit,
            kernel: figure(k).map(|v| v / per),
            overlayd: figure(o).map(|v| v / per),
            ratio: ratio(figure(o), figure(k), lower_is_better),
            cpu_unit,
            cpu_kernel,
            cpu_overlayd,
            cpu_ratio: ratio(cpu_overlayd, cpu_kernel, false),
        }
    };
    [
        row(
            "TCP 1 stream",
            "Gbit/s",
            1.0,
            |r| r.tcp1_gbps,
            false,
            Some(("CPU-s/GB", |r| r.tcp1_cpu)),
        ),
        row(
            "TCP 4 streams",
            "Gbit/s",
            1.0,
            |r| r.tcp4_gbps,
            false,
            Some(("CPU-s/GB", |r| r.tcp4_cpu)),
        ),
        row(
            "UDP 64 B",
            "kpps",
            1e3,
            |r| r.udp64_pps,
            false,
            Some(("CPU-s/Mpkt", |r| r.udp64_cpu)),
        ),
        row("ping RTT p50", "ms", 1.0, |r| r.ping_p50_ms, true, None),
    ]
}

pub fn table(opts: &Opts, k: &Results, o: &Results) -> String {
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

pub fn to_json(opts: &Opts, k: &Results, o: &Results) -> String {
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

pub fn uptime() -> String {
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

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}
