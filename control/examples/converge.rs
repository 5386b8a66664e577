//! Convergence and gossip cost of the control plane in the simulator (virtual time, deterministic).
//!
//! `cargo run --release -p control --features testing --example converge -- [N ...]` (default 32 128 1000;
//! `--gossip-ms X`, `--fanout Y`, `--batch-ms Z` override those timings, `--budget B` the gossip budget
//! in bytes per second, `--announce-ms A` SWIM's periodic announce)
//! prints, per cluster size: formation (every node starts at once and joins node 0), how long a MAC takes
//! to be known by every other node (during formation from t = 0, and in the formed cluster from the
//! MAC's appearance), and bytes sent per node per second (idle, and while MACs appear).

use control::sim::{scale_run, ScaleReport, SimConfig};
use std::time::Duration;

fn main() {
    // `--gossip-ms X` / `--fanout Y` / `--batch-ms Z` / `--budget B` / `--announce-ms A`: try other settings than the defaults.
    let mut cfg = SimConfig::default();
    let mut sizes: Vec<usize> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            let v = args.next().unwrap_or_else(|| panic!("{what} needs a number"));
            v.parse().unwrap_or_else(|e| panic!("{what} {v}: {e}"))
        };
        match a.as_str() {
            "--gossip-ms" => cfg.control.gossip_interval = Duration::from_millis(num("--gossip-ms")),
            "--fanout" => cfg.control.gossip_fanout = num("--fanout") as usize,
            "--batch-ms" => cfg.control.advert_batch_window = Duration::from_millis(num("--batch-ms")),
            "--budget" => cfg.control.gossip_budget = num("--budget"),
            "--announce-ms" => cfg.control.announce_interval = Duration::from_millis(num("--announce-ms")),
            _ => sizes.push(a.parse().unwrap_or_else(|e| panic!("cluster size {a}: {e}"))),
        }
    }
    let sizes = if sizes.is_empty() {
        vec![32, 128, 1000]
    } else {
        sizes
    };
    let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
    let bps = |v: &[f64], p| ScaleReport::pct(v, p).map_or("-".into(), |x| format!("{x:.0} B/s"));
    println!(
        "{:>5}  {:>9}  {:>24}  {:>24}  {:>20}  {:>20}  {:>6}",
        "N",
        "formed",
        "formation p50/p99",
        "new MAC p50/p99/max",
        "idle B/s p50/max",
        "changing B/s p50/max",
        "deaths"
    );
    let mut reports: Vec<ScaleReport> = Vec::new();
    for n in sizes {
        let wall = std::time::Instant::now();
        let r = scale_run(n, 16, cfg.clone());
        println!(
            "{:>5}  {:>9}  {:>24}  {:>24}  {:>20}  {:>20}  {:>6}",
            n,
            ms(r.formed),
            format!(
                "{} / {}",
                ms(ScaleReport::pct(&r.formation_known, 50.0)),
                ms(ScaleReport::pct(&r.formation_known, 99.0))
            ),
            format!(
                "{} / {} / {}",
                ms(ScaleReport::pct(&r.change_known, 50.0)),
                ms(ScaleReport::pct(&r.change_known, 99.0)),
                ms(ScaleReport::pct(&r.change_known, 100.0))
            ),
            format!(
                "{} / {}",
                bps(&r.idle_bytes_per_s, 50.0),
                bps(&r.idle_bytes_per_s, 100.0)
            ),
            format!(
                "{} / {}",
                bps(&r.change_bytes_per_s, 50.0),
                bps(&r.change_bytes_per_s, 100.0)
            ),
            r.deaths
        );
        eprintln!(
            "  (N = {n}: {:.1} s wall clock, {} events, {} messages of which {} sync, {} pace timers; \
             at most {} table passes waiting for the gossip budget during formation, over all nodes, at {} ms)",
            wall.elapsed().as_secs_f64(),
            r.events,
            r.messages,
            r.sync_messages,
            r.pace_timers,
            r.peak_pending_tables,
            r.peak_pending_at.as_millis()
        );
        if r.formed.is_none() {
            eprintln!(
                "  (N = {n}: not formed within the 120 s limit: {} of {n} MACs not yet held by every other node then; \
                 formation p50/p99 are over the {} that were)",
                r.formation_unfinished,
                r.formation_known.len()
            );
        }
        reports.push(r);
    }
    growth(&reports);
}

/// How the per-node cost grew from the smallest to each larger size, against the two models: total
/// cost O(N log N) is O(log N) per node (ratio log b / log a), O(N²) total is O(N) per node (b / a).
fn growth(reports: &[ScaleReport]) {
    let Some((first, rest)) = reports.split_first() else {
        return;
    };
    if rest.is_empty() {
        return;
    }
    println!();
    println!(
        "per-node bytes/s growth from N = {} (p50; O(N log N) total = O(log N) per node, O(N²) total = O(N) per node)",
        first.nodes
    );
    println!(
        "{:>5}  {:>10}  {:>10}  {:>14}  {:>14}  {:>10}",
        "N", "idle ×", "changing ×", "log N model ×", "N model ×", "verdict"
    );
    let p50 = |v: &[f64]| ScaleReport::pct(v, 50.0).unwrap_or(f64::NAN);
    for r in rest {
        let idle = p50(&r.idle_bytes_per_s) / p50(&first.idle_bytes_per_s);
        let busy = p50(&r.change_bytes_per_s) / p50(&first.change_bytes_per_s);
        let log_model = (r.nodes as f64).ln() / (first.nodes as f64).ln();
        let n_model = r.nodes as f64 / first.nodes as f64;
        let verdict = if idle <= log_model {
            "≤ log N"
        } else if idle < n_model {
            "< N"
        } else {
            "≥ N"
        };
        println!(
            "{:>5}  {:>10.2}  {:>10.2}  {:>14.2}  {:>14.2}  {:>10}",
            r.nodes, idle, busy, log_model, n_model, verdict
        );
    }
}
