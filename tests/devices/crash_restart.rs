//! §5 crash and restart: SIGKILL during a TCP transfer, a restart, and the transfer completes byte-identical.

use super::{master, start, start_pair, TAP};
use crate::common::overlay::ping_ok;
use crate::common::testbed::{pseudo_random_bytes, wait_until, Container, Netns, Testbed, BRIDGE};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let (mut d1, _d2) = start_pair(h1, h2);
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
