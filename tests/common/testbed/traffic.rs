//! Traffic between testbed namespaces: reproducible pseudo-random payloads and a TCP transfer with `socat`
//! that checks every byte arrived. Only ever between namespaces the testbed created.

use super::cmd::wait_until;
use super::{Container, Netns};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_child(c: &mut Child, deadline: Instant) -> bool {
    wait_until(deadline.saturating_duration_since(Instant::now()), || {
        matches!(c.try_wait(), Ok(Some(_)))
    })
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failing transfer is reproducible.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `mb` MiB of pseudo-random data over TCP from `from` to `to` (port `port`) with `socat`, and checks
/// that exactly the same bytes arrived. Fails if the transfer does not finish within `timeout`.
pub fn tcp_transfer(
    from: &impl Netns,
    to: &Container,
    port: u16,
    mb: usize,
    timeout: Duration,
) -> Result<(), String> {
    let data = pseudo_random_bytes(0x5eed ^ (port as u64) << 32 ^ mb as u64, mb << 20);
    let listen = format!("TCP-LISTEN:{port},reuseaddr");
    let mut rx = Command::new("ip")
        .args(["netns", "exec", to.ns(), "socat", "-u", &listen, "STDOUT"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start socat listener in {}: {e} (apt-get install socat)",
                to.ns()
            )
        })?;
    let mut rx_out = rx.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = rx_out.read_to_end(&mut buf);
        (buf, r)
    });
    // The client retries the connection until the listener is up (socat `retry`), instead of a sleep.
    let connect = format!("TCP:{}:{port},retry=100,interval=0.1", to.ip());
    let mut tx = Command::new("ip")
        .args(["netns", "exec", from.ns(), "socat", "-u", "STDIN", &connect])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start socat sender in {}: {e}", from.ns()))?;
    let mut tx_in = tx.stdin.take().ok_or("no stdin pipe")?;
    let writer = std::thread::spawn(move || {
        let r = tx_in.write_all(&data);
        drop(tx_in); // EOF → socat closes the connection
        (data, r)
    });
    let deadline = Instant::now() + timeout;
    let tx_done = wait_child(&mut tx, deadline);
    let rx_done = tx_done && wait_child(&mut rx, deadline);
    if !(tx_done && rx_done) {
        let _ = tx.kill();
        let _ = rx.kill();
    }
    let tx_out = tx.wait_with_output().map_err(|e| e.to_string())?;
    let rx_status = rx.wait().map_err(|e| e.to_string())?;
    let mut rx_err = String::new();
    if let Some(mut e) = rx.stderr.take() {
        let _ = e.read_to_string(&mut rx_err);
    }
    let (data, wr) = writer.join().map_err(|_| "writer thread panicked")?;
    let (got, rr) = reader.join().map_err(|_| "reader thread panicked")?;
    let what = format!("TCP {mb} MiB {} → {}:{port}", from.ns(), to.ip());
    if !(tx_done && rx_done) {
        return Err(format!(
            "{what}: not finished within {timeout:?} ({} of {} bytes arrived); sender stderr: {}; receiver \
             stderr: {}",
            got.len(),
            data.len(),
            String::from_utf8_lossy(&tx_out.stderr).trim(),
            rx_err.trim()
        ));
    }
    if !tx_out.status.success() || !rx_status.success() || wr.is_err() || rr.is_err() {
        return Err(format!(
            "{what}: sender {} ({:?}) stderr: {}; receiver {rx_status} ({rr:?}) stderr: {}",
            tx_out.status,
            wr.err(),
            String::from_utf8_lossy(&tx_out.stderr).trim(),
            rx_err.trim()
        ));
    }
    if got.len() != data.len() {
        return Err(format!(
            "{what}: received {} bytes, sent {}",
            got.len(),
            data.len()
        ));
    }
    if let Some(i) = got.iter().zip(&data).position(|(a, b)| a != b) {
        return Err(format!("{what}: data differs at byte {i} of {}", data.len()));
    }
    Ok(())
}
