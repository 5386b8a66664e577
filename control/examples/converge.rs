//! Convergence and gossip cost of the control plane in the simulator (virtual time, deterministic).
//!
//! `cargo run --release -p control --features testing --example converge -- [N ...]` (default 32 128 1000;
//! `--gossip-ms X`, `--fanout Y`, `--batch-ms Z` override those timings)
//! prints, per cluster size: formation (every node starts at once and joins node 0), how long a MAC takes
//! to be known by every other node (during formation from t = 0, and in the formed cluster from the
//! MAC's appearance), and bytes sent per node per second (idle, and while MACs appear).

use control::sim::{scale_run, ScaleReport, SimConfig};
use std::time::Duration;

fn main() {
    // `--gossip-ms X` / `--fanout Y` / `--batch-ms Z`: try other timings than the defaults.
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
            "  (N = {n}: {:.1} s wall clock, {} events, {} messages)",
            wall.elapsed().as_secs_f64(),
            r.events,
            r.messages
        );
    }
}
