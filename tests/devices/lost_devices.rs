//! §1 lost devices: a TAP or bridge deleted, downed or taken off its bridge under a running overlayd is
//! restored without spinning; a TAP that cannot be recreated makes overlayd exit non-zero with the reason.

use super::{is_up, link, log_count, master, mtu, start, start_pair, wait_log, TAP};
use crate::common::overlay::ping_ok;
use crate::common::testbed::{wait_until, BridgeMode, Netns, Testbed, BRIDGE};
use std::process::Command;
use std::time::{Duration, Instant};

/// utime + stime of `pid` in clock ticks (/proc/PID/stat fields 14 and 15, counted after the `(comm)`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("unexpected /proc/{pid}/stat: {stat}"));
    // After ")": state(3) ppid(4) … utime(14) stime(15), i.e. items 11 and 12 counting from 0 at state.
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("bad /proc/{pid}/stat field {v}: {e}"))
        })
        .collect();
    assert_eq!(f.len(), 2, "short /proc/{pid}/stat: {stat}");
    f[0] + f[1]
}

/// The state letter of /proc/PID/stat (`T` = stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

fn clock_ticks_per_s() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU share (of one core) that `pid` used over `over`. A busy loop on one thread reads ≈ 1.0.
fn cpu_share(pid: u32, over: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(over);
    let (t1, c1) = (Instant::now(), cpu_ticks(pid));
    (c1 - c0) as f64 / clock_ticks_per_s() as f64 / (t1 - t0).as_secs_f64()
}

/// Upper bound on CPU while there is no traffic: the watcher re-reads two links per second, the workers
/// sleep in poll (measured: under 1%). The spinning TX thread of issue 9 read ≈ 0.9 on an idle machine and
/// still 0.3 on this loaded 2-core VM.
const IDLE_CPU_MAX: f64 = 0.1;

/// `ip link del ovl1` and `ip link set ovl1 down` under a running overlayd: it notices within 1 s, logs it
/// once, recreates the TAP (same MTU, on the bridge, up), pings resume and the daemon does not spin.
#[test]
fn deleted_or_downed_tap_is_restored_without_spinning() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (d1, _d2) = start_pair(h1, h2);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);

    let t0 = Instant::now();
    h1.run("ip", &["link", "del", TAP]);
    let noticed = wait_log(&d1, "TAP disappeared", t0, Duration::from_secs(1));
    let noticed = noticed.unwrap_or_else(|| panic!("deletion of {TAP} not logged within 1 s:\n{}", d1.log()));
    let restored = wait_until(Duration::from_secs(5), || {
        is_up(h1, TAP) && master(h1, TAP).as_deref() == Some(BRIDGE)
    });
    assert!(
        restored,
        "{TAP} not back (up, on {BRIDGE}) within 5 s: {:?}\n{}",
        link(h1, TAP),
        d1.log()
    );
    let restored_after = t0.elapsed();
    assert_eq!(
        mtu(h1, TAP),
        Some(1450),
        "recreated TAP keeps its MTU: {:?}",
        link(h1, TAP)
    );
    assert!(
        wait_until(Duration::from_secs(5), || c1.ping(c2.ip(), 1).is_ok()),
        "no ping through the recreated TAP within 5 s:\n{}",
        d1.log()
    );
    let pings_after = t0.elapsed();
    ping_ok(c1, c2.ip(), 5);
    ping_ok(c2, c1.ip(), 5);
    println!(
        "TAP deleted: noticed after {} ms, TAP back after {} ms, first ping reply after {} ms",
        noticed.as_millis(),
        restored_after.as_millis(),
        pings_after.as_millis()
    );
    assert_eq!(log_count(&d1, "TAP disappeared"), 1, "logged once:\n{}", d1.log());

    // Idle afterwards: no thread left spinning on the old fd.
    let share = cpu_share(d1.pid(), Duration::from_secs(2));
    println!("CPU after the TAP was restored: {:.1}% of a core", share * 100.0);
    assert!(
        share < IDLE_CPU_MAX,
        "overlayd uses {:.0}% CPU while idle",
        share * 100.0
    );

    // Down instead of deleted: brought back up.
    let t0 = Instant::now();
    h1.run("ip", &["link", "set", TAP, "down"]);
    let noticed = wait_log(&d1, "TAP went down", t0, Duration::from_secs(1));
    assert!(
        noticed.is_some(),
        "{TAP} down not logged within 1 s:\n{}",
        d1.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || is_up(h1, TAP)),
        "{TAP} not up again within 5 s:\n{}",
        d1.log()
    );
    ping_ok(c1, c2.ip(), 3);
    assert_eq!(log_count(&d1, "TAP went down"), 1, "logged once:\n{}", d1.log());

    // Taken off the bridge: put back.
    let t0 = Instant::now();
    h1.run("ip", &["link", "set", TAP, "nomaster"]);
    let noticed = wait_log(&d1, "TAP is no longer on the bridge", t0, Duration::from_secs(1));
    assert!(
        noticed.is_some(),
        "{TAP} nomaster not logged within 1 s:\n{}",
        d1.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || master(h1, TAP).as_deref()
            == Some(BRIDGE)),
        "{TAP} not back on {BRIDGE} within 5 s:\n{}",
        d1.log()
    );
    ping_ok(c1, c2.ip(), 3);
    assert_eq!(
        log_count(&d1, "TAP disappeared"),
        1,
        "no second deletion:\n{}",
        d1.log()
    );
}

/// `ip link set ovl0 down` and `ip link del ovl0` (the bridge overlayd created): brought up / recreated with
/// the TAP on it; pings resume (after a deletion, once the container's veth, released by the kernel with the
/// old bridge, is plugged in again by its owner — here the test).
#[test]
fn downed_or_deleted_bridge_is_restored() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (mut d1, _d2) = start_pair(h1, h2);
    h1.attach_container(Duration::from_secs(10));
    h2.attach_container(Duration::from_secs(10));
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);

    let t0 = Instant::now();
    h1.run("ip", &["link", "set", BRIDGE, "down"]);
    let noticed = wait_log(&d1, "bridge went down", t0, Duration::from_secs(1));
    assert!(
        noticed.is_some(),
        "{BRIDGE} down not logged within 1 s:\n{}",
        d1.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || is_up(h1, BRIDGE)),
        "{BRIDGE} not up again within 5 s:\n{}",
        d1.log()
    );
    ping_ok(c1, c2.ip(), 3);

    let t0 = Instant::now();
    h1.run("ip", &["link", "del", BRIDGE]);
    let noticed = wait_log(&d1, "bridge disappeared", t0, Duration::from_secs(1));
    let noticed = noticed.unwrap_or_else(|| panic!("{BRIDGE} deletion not logged within 1 s:\n{}", d1.log()));
    let back = wait_until(Duration::from_secs(5), || {
        is_up(h1, BRIDGE) && is_up(h1, TAP) && master(h1, TAP).as_deref() == Some(BRIDGE)
    });
    assert!(
        back,
        "{BRIDGE} not recreated with {TAP} on it within 5 s: {:?} {:?}\n{}",
        link(h1, BRIDGE),
        link(h1, TAP),
        d1.log()
    );
    println!(
        "bridge deleted: noticed after {} ms, bridge and TAP back after {} ms",
        noticed.as_millis(),
        t0.elapsed().as_millis()
    );
    h1.attach_container(Duration::ZERO);
    ping_ok(c1, c2.ip(), 3);
    ping_ok(c2, c1.ip(), 3);
    assert_eq!(
        log_count(&d1, "bridge disappeared"),
        1,
        "logged once:\n{}",
        d1.log()
    );
    assert!(d1.is_running(), "overlayd exited:\n{}", d1.log());
}

/// When the TAP cannot be recreated (another device took its name), overlayd keeps trying for a few seconds
/// without spinning, then exits non-zero naming the reason.
#[test]
fn unrecoverable_tap_loss_exits_nonzero_with_the_reason() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(h1, h2);
    // Stopped, it cannot win the race: delete its TAP and put a bridge under the TAP's name meanwhile.
    d1.signal("STOP").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_until(Duration::from_secs(2), || proc_state(d1.pid()) == Some('T')),
        "overlayd not stopped by SIGSTOP"
    );
    h1.run("ip", &["link", "del", TAP]);
    h1.run("ip", &["link", "add", TAP, "type", "bridge"]);
    d1.signal("CONT").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_log(&d1, "TAP disappeared", Instant::now(), Duration::from_secs(1)).is_some(),
        "lost TAP not logged within 1 s of SIGCONT:\n{}",
        d1.log()
    );
    // The old fd polls POLLERR and reads EBADFD while the watcher retries: no busy loop.
    let share = cpu_share(d1.pid(), Duration::from_millis(1500));
    println!(
        "CPU while the TAP cannot be restored: {:.1}% of a core",
        share * 100.0
    );
    assert!(
        share < IDLE_CPU_MAX,
        "overlayd spins at {:.0}% CPU without its TAP",
        share * 100.0
    );
    let st = d1.wait_timeout(Duration::from_secs(10));
    let st = st.unwrap_or_else(|| panic!("overlayd still running 10 s after losing its TAP:\n{}", d1.log()));
    let log = d1.log();
    assert_eq!(st.code(), Some(1), "exit status {st}:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("overlayd: ") && last.contains("TAP disappeared") && last.contains(TAP),
        "the last line must give the reason: {last:?}\n{log}"
    );
    assert!(
        last.contains("used by another device"),
        "the reason names the conflict: {last:?}"
    );
    // It removed nothing it did not create: the foreign bridge and the testbed's ovl0 are still there.
    assert!(h1.link_exists(TAP) && h1.link_exists(BRIDGE));
}
