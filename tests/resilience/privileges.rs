//! §7 least privilege: every thread of a running overlayd keeps only its capabilities, and the daemon still
//! works with them.

use super::{one_at_a_time, start_static_pair};
use crate::common::overlay::ping_ok;
use crate::common::testbed::{wait_until, Daemon, Netns, Testbed};
use std::collections::BTreeMap;
use std::time::Duration;

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
    let (mut d1, _d2) = start_static_pair(h1, h2);
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
