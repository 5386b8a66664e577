//! CPU cost of a test: whole-system CPU-seconds spent while it ran (from /proc/stat, see [`crate::cpustat`]),
//! per unit carried, and the machine's background load.

use std::time::Duration;

use crate::cpustat;

/// Run `f` and return its result with the whole-system CPU-seconds spent meanwhile (all CPUs).
pub fn with_cpu<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, f64), String> {
    let before = cpustat::read()?;
    let v = f()?;
    let after = cpustat::read()?;
    Ok((v, after.busy_seconds_since(&before, cpustat::clock_ticks())))
}

/// CPU-seconds per unit carried; an error when nothing was carried.
pub fn per_unit(cpu_s: f64, units: f64) -> Result<f64, String> {
    if units > 0.0 {
        Ok(cpu_s / units)
    } else {
        Err("nothing received: no CPU cost per unit".into())
    }
}

/// Busy fraction of all CPUs over one second with no test traffic.
pub fn background_load() -> Option<f64> {
    let (before, t0) = (cpustat::read().ok()?, std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (after, dt) = (cpustat::read().ok()?, t0.elapsed().as_secs_f64());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Some(after.busy_seconds_since(&before, cpustat::clock_ticks()) / (dt * cpus))
}

#[cfg(test)]
mod tests {
    /// `cpu_floor.py` (the copy-and-checksum floor of README "The floor on this testbed") parses `perf
    /// report` lines: its self-test checks a sample report, idle and non-sample lines left out.
    #[test]
    fn cpu_floor_script_parses_a_perf_report() {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/bench_vs_kernel/cpu_floor.py"
        );
        let out = std::process::Command::new("python3")
            .args([script, "--self-test"])
            .output()
            .unwrap_or_else(|e| panic!("python3 (Debian package python3) is needed: {e}"));
        assert!(
            out.status.success(),
            "cpu_floor.py --self-test failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
