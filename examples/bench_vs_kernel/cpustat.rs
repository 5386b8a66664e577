//! Whole-system CPU time from /proc/stat (proc(5)): the first line, `cpu  user nice system idle iowait irq
//! softirq steal guest guest_nice`, in clock ticks summed over all CPUs.

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
