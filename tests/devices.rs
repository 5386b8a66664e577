//! Faults around the host devices (issue 9 §1, §2, §5, §7): a TAP or bridge lost under a running overlayd,
//! which bridge survives its exit, a SIGKILL and restart during a TCP transfer, and one daemon per state dir.
//!
//! Real overlayd processes in namespace testbeds (tests/common/testbed.rs); every deadline is functional.
//! Measured values (time to notice, outage) are printed, run with `--nocapture` to see them.

mod common;

use common::overlay::{ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{
    pseudo_random_bytes, wait_until, BridgeMode, Container, Daemon, Host, Netns, Testbed, BRIDGE,
};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TAP: &str = "ovl1";

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn state_dir(host: &Host) -> String {
    host.log_dir()
        .join(format!("state-{}", host.ns()))
        .display()
        .to_string()
}

fn args(host: &Host, peer: &Host) -> Vec<String> {
    vec![
        "--peer".into(),
        peer.underlay_ip().to_string(),
        "--local".into(),
        host.underlay_ip().to_string(),
        "--state-dir".into(),
        state_dir(host),
    ]
}

/// Starts overlayd on `host` (static, `peer` as its peer) and waits until its TAP exists and it answers.
fn start(host: &Host, peer: &Host) -> Daemon {
    let a = args(host, peer);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut d = spawn_overlayd(host, &a);
    let ready = wait_until(Duration::from_secs(10), || {
        !d.is_running() || (host.link_exists(TAP) && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 10 s:\n{}", d.cmdline(), d.log());
    d
}

/// `ip -o link show dev <dev>` in `host`, or None if there is no such link.
fn link(host: &Host, dev: &str) -> Option<String> {
    host.exec("ip", &["-o", "link", "show", "dev", dev]).ok()
}

/// Administratively up (the UP flag inside `<…>`).
fn is_up(host: &Host, dev: &str) -> bool {
    link(host, dev).is_some_and(|l| {
        l.split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
    })
}

fn master(host: &Host, dev: &str) -> Option<String> {
    let l = link(host, dev)?;
    let mut words = l.split_whitespace();
    words.find(|w| *w == "master")?;
    words.next().map(str::to_owned)
}

fn mtu(host: &Host, dev: &str) -> Option<u32> {
    let l = link(host, dev)?;
    let mut words = l.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log().lines().filter(|l| l.contains(needle)).count()
}

/// Time from `since` until `needle` shows up in the daemon's log (polled every 50 ms), if within `timeout`.
fn wait_log(d: &Daemon, needle: &str, since: Instant, timeout: Duration) -> Option<Duration> {
    wait_until(timeout, || log_count(d, needle) > 0).then(|| since.elapsed())
}

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

// ---------------------------------------------------------------------------------------------------------
// §1 lost devices
// ---------------------------------------------------------------------------------------------------------

/// `ip link del ovl1` and `ip link set ovl1 down` under a running overlayd: it notices within 1 s, logs it
/// once, recreates the TAP (same MTU, on the bridge, up), pings resume and the daemon does not spin.
#[test]
fn deleted_or_downed_tap_is_restored_without_spinning() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let d1 = start(h1, h2);
    let _d2 = start(h2, h1);
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
    let mut d1 = start(h1, h2);
    let _d2 = start(h2, h1);
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

// ---------------------------------------------------------------------------------------------------------
// §2 bridge ownership
// ---------------------------------------------------------------------------------------------------------

/// A bridge overlayd created stays on SIGTERM while a container's veth is on it (and a restart finds it with
/// the veth still attached); a bridge it created with no other port is removed.
#[test]
fn sigterm_keeps_a_bridge_with_other_ports_and_removes_an_empty_one() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(h1, h2);
    let mut d2 = start(h2, h1);
    // Only host 1's container is plugged into the bridge overlayd created.
    h1.attach_container(Duration::from_secs(10));
    assert!(log_count(&d1, "created bridge") == 1 && log_count(&d2, "created bridge") == 1);

    for (d, h) in [(&mut d1, h1), (&mut d2, h2)] {
        d.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
        let st = d.wait_timeout(Duration::from_secs(5));
        let st = st.unwrap_or_else(|| panic!("host {}: still running 5 s after SIGTERM", h.index()));
        assert_eq!(st.code(), Some(0), "host {}: {st}\n{}", h.index(), d.log());
        assert!(!h.link_exists(TAP), "host {}: TAP left behind", h.index());
    }
    assert!(
        h1.link_exists(BRIDGE),
        "bridge with a container on it was removed:\n{}",
        d1.log()
    );
    assert_eq!(
        master(h1, "vc1").as_deref(),
        Some(BRIDGE),
        "veth no longer on the bridge"
    );
    assert_eq!(
        log_count(&d1, "leaving bridge we created in place"),
        1,
        "{}",
        d1.log()
    );
    assert!(
        !h2.link_exists(BRIDGE),
        "empty bridge overlayd created was left behind:\n{}",
        d2.log()
    );
    assert_eq!(log_count(&d2, "removed bridge we created"), 1, "{}", d2.log());

    // A restart plugs into the surviving bridge; the container is still on it and reachable again.
    let mut d1 = start(h1, h2);
    let _d2 = start(h2, h1);
    h2.attach_container(Duration::from_secs(10));
    assert_eq!(master(h1, "vc1").as_deref(), Some(BRIDGE));
    assert_eq!(master(h1, TAP).as_deref(), Some(BRIDGE));
    ping_ok(tb.container(1), tb.container(2).ip(), 3);
    // The state dir records that an overlayd created it: once the container is gone, this run removes it.
    assert_eq!(
        log_count(&d1, "found the bridge an earlier overlayd created"),
        1,
        "{}",
        d1.log()
    );
    h1.run("ip", &["link", "set", "vc1", "nomaster"]);
    d1.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d1.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        !h1.link_exists(BRIDGE),
        "empty bridge an earlier run created was left:\n{}",
        d1.log()
    );
    assert!(!h1.link_exists(TAP));
}

/// A bridge overlayd did not create is never removed, even with nothing else on it; nor is one that merely
/// has the name of a bridge an earlier run created (the record names the exact device).
#[test]
fn sigterm_never_removes_a_bridge_it_did_not_create() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    // The testbed made ovl0 (no ports).
    let mut d1 = start(h1, h2);
    d1.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d1.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        h1.link_exists(BRIDGE),
        "pre-existing bridge removed:\n{}",
        d1.log()
    );

    // Host 1 again, but overlayd creates the bridge, then is killed (the record stays); someone replaces
    // the bridge with their own of the same name; the next run must not adopt that one.
    h1.run("ip", &["link", "del", BRIDGE]);
    let mut d2 = start(h1, h2);
    assert_eq!(log_count(&d2, "created bridge"), 1, "{}", d2.log());
    d2.kill();
    h1.run("ip", &["link", "del", BRIDGE]);
    h1.run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
    let mut d3 = start(h1, h2);
    assert_eq!(
        log_count(&d3, "found the bridge an earlier overlayd created"),
        0,
        "{}",
        d3.log()
    );
    d3.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d3.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        h1.link_exists(BRIDGE),
        "someone else's bridge removed:\n{}",
        d3.log()
    );
}

// ---------------------------------------------------------------------------------------------------------
// §5 crash and restart
// ---------------------------------------------------------------------------------------------------------

/// A TCP transfer paced over several seconds (so a crash lands in the middle of it) from `from` to `to`.
/// Returns the bytes that arrived and the longest time the receiver saw no data.
struct PacedTransfer {
    rx: std::process::Child,
    tx: std::process::Child,
    writer: std::thread::JoinHandle<(Vec<u8>, std::io::Result<()>)>,
    reader: std::thread::JoinHandle<(Vec<u8>, Duration)>,
}

impl PacedTransfer {
    fn start(from: &Container, to: &Container, port: u16, chunks: usize, every: Duration) -> PacedTransfer {
        const CHUNK: usize = 32 * 1024;
        let data = pseudo_random_bytes(0xc4a5 ^ u64::from(port), chunks * CHUNK);
        let listen = format!("TCP-LISTEN:{port},reuseaddr");
        let mut rx = Command::new("ip")
            .args(["netns", "exec", to.ns(), "socat", "-u", &listen, "STDOUT"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start socat (apt-get install socat): {e}"));
        let mut out = rx.stdout.take().unwrap_or_else(|| panic!("no stdout pipe"));
        let reader = std::thread::spawn(move || {
            let (mut got, mut buf) = (Vec::new(), vec![0u8; 65536]);
            let (mut last, mut stall) = (None::<Instant>, Duration::ZERO);
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                if let Some(l) = last {
                    stall = stall.max(now - l);
                }
                last = Some(now);
                got.extend_from_slice(&buf[..n]);
            }
            (got, stall)
        });
        let connect = format!("TCP:{}:{port},retry=100,interval=0.1", to.ip());
        let mut tx = Command::new("ip")
            .args(["netns", "exec", from.ns(), "socat", "-u", "STDIN", &connect])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start socat: {e}"));
        let mut input = tx.stdin.take().unwrap_or_else(|| panic!("no stdin pipe"));
        let writer = std::thread::spawn(move || {
            let mut r = Ok(());
            for c in data.chunks(CHUNK) {
                r = input.write_all(c);
                if r.is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
            drop(input);
            (data, r)
        });
        PacedTransfer {
            rx,
            tx,
            writer,
            reader,
        }
    }

    /// Waits (up to `timeout`) for both ends; Err if it did not finish or the bytes differ.
    fn finish(mut self, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        let done = wait_until(timeout, || matches!(self.tx.try_wait(), Ok(Some(_))))
            && wait_until(deadline.saturating_duration_since(Instant::now()), || {
                matches!(self.rx.try_wait(), Ok(Some(_)))
            });
        if !done {
            let _ = self.tx.kill();
            let _ = self.rx.kill();
        }
        let _ = self.tx.wait();
        let _ = self.rx.wait();
        let (sent, wr) = self.writer.join().map_err(|_| "writer panicked")?;
        let (got, stall) = self.reader.join().map_err(|_| "reader panicked")?;
        if !done {
            return Err(format!(
                "not finished within {timeout:?}: {} of {} bytes",
                got.len(),
                sent.len()
            ));
        }
        wr.map_err(|e| format!("sender: {e}"))?;
        if got != sent {
            return Err(format!(
                "received {} bytes, sent {}; contents differ",
                got.len(),
                sent.len()
            ));
        }
        Ok(stall)
    }
}

/// Largest gap in the `icmp_seq` of the replies printed by `ping -i <interval>`, as time.
fn ping_outage(log: &str, interval: Duration) -> Option<Duration> {
    let seqs: Vec<u32> = log
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    let gap = seqs.windows(2).map(|w| w[1].saturating_sub(w[0])).max()?;
    Some(interval * gap)
}

/// SIGKILL overlayd during a TCP transfer and start it again: the new process recreates the TAP (the
/// kernel removed its predecessor's, which was not persistent), re-attaches it, and the transfer completes
/// with identical bytes. Prints the outage seen by a 10 ms ping train and by the TCP receiver.
#[test]
fn sigkill_and_restart_during_tcp_transfer() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(h1, h2);
    let _d2 = start(h2, h1);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c1, c2.ip(), 3);

    let interval = Duration::from_millis(10);
    let c2ip = c2.ip().to_string();
    // 10 s of pings at 10 ms (ping allows < 200 ms as root).
    let mut pinger = c1.spawn("ping", &["-n", "-i", "0.01", "-W", "1", "-w", "10", &c2ip]);
    // 24 MiB in 768 chunks of 32 KiB, one every 8 ms: about 6 s without the crash.
    let transfer = PacedTransfer::start(c1, c2, 5101, 768, Duration::from_millis(8));
    std::thread::sleep(Duration::from_secs(2));

    let killed = Instant::now();
    d1.kill(); // SIGKILL and reap
    assert!(
        wait_until(Duration::from_secs(2), || !h1.link_exists(TAP)),
        "the killed daemon's TAP is still there"
    );
    let d1b = start(h1, h2);
    let restarted = killed.elapsed();
    assert_eq!(
        master(h1, TAP).as_deref(),
        Some(BRIDGE),
        "restarted TAP not on the bridge"
    );

    let tcp_stall = transfer
        .finish(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("TCP transfer across the restart: {e}\n{}", d1b.log()));
    let st = pinger.wait_timeout(Duration::from_secs(15));
    assert!(st.is_some(), "ping did not end");
    let outage = ping_outage(&pinger.log(), interval)
        .unwrap_or_else(|| panic!("no ping replies parsed:\n{}", pinger.log()));
    println!(
        "SIGKILL + restart: new daemon ready {} ms after the kill; ping outage {} ms (10 ms train); \
         longest TCP receive stall {} ms",
        restarted.as_millis(),
        outage.as_millis(),
        tcp_stall.as_millis()
    );
    // Functional: replies came back after the restart (the last seq is past the outage), i.e. the gap closed.
    assert!(
        outage < Duration::from_secs(8),
        "ping never recovered: outage {outage:?}"
    );
    ping_ok(c1, c2.ip(), 3);
}

// ---------------------------------------------------------------------------------------------------------
// §7 one daemon per state dir
// ---------------------------------------------------------------------------------------------------------

/// A second overlayd with the same --state-dir exits non-zero and names the first one's pid; the first keeps
/// running. After the first is gone (even by SIGKILL), the state dir is free again.
#[test]
fn second_daemon_on_the_same_state_dir_is_refused() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(h1, h2);
    let a = args(h1, h2);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut second = spawn_overlayd(h1, &a);
    let st = second.wait_timeout(Duration::from_secs(5));
    let st = st.unwrap_or_else(|| panic!("second daemon still running:\n{}", second.log()));
    let log = second.log();
    assert_eq!(st.code(), Some(1), "second daemon: {st}\n{log}");
    let pid = format!("pid {}", d1.pid());
    assert!(
        log.contains(&pid) && log.contains(&state_dir(h1)),
        "error must name {pid} and the dir:\n{log}"
    );
    assert!(d1.is_running(), "the first daemon died:\n{}", d1.log());
    h1.run(OVERLAYCTL, &["stats", "--json"]);
    let lock = std::fs::read_to_string(format!("{}/lock", state_dir(h1))).unwrap_or_default();
    assert_eq!(
        lock.trim(),
        d1.pid().to_string(),
        "lock file holds the owner's pid"
    );

    // The kernel releases the lock with the process, so a crash never blocks the next start.
    d1.kill();
    let d3 = start(h1, h2);
    let lock = std::fs::read_to_string(format!("{}/lock", state_dir(h1))).unwrap_or_default();
    assert_eq!(lock.trim(), d3.pid().to_string());
}
