//! The traffic of the tests: iperf3 and ping runs from container 1 to container 2, and what their output says.

use serde_json::Value;

use crate::testbed::{Container, Netns};
use crate::{IPERF_PORT, PINGS};

pub fn iperf(c1: &Container, c2: &Container, extra: &[&str]) -> Result<Value, String> {
    let ip = c2.ip().to_string();
    let mut args = vec!["-c", ip.as_str(), "-p", IPERF_PORT, "-J"];
    args.extend_from_slice(extra);
    // iperf3 -J prints its JSON (including an "error" member) on stdout, also when it exits non-zero.
    let out = match c1.exec("iperf3", &args) {
        Ok(o) => o,
        Err(e) if !e.stdout.trim().is_empty() => e.stdout,
        Err(e) => return Err(e.to_string()),
    };
    let v: Value =
        serde_json::from_str(&out).map_err(|e| format!("iperf3 output is not JSON ({e}): {out}"))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3: {err}"));
    }
    Ok(v)
}

pub fn tcp_rx_bytes(v: &Value) -> Result<f64, String> {
    v.pointer("/end/sum_received/bytes")
        .and_then(Value::as_f64)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received.bytes".into())
}

pub fn tcp_gbps(v: &Value) -> Result<f64, String> {
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received.bits_per_second".into())
}

/// Receiver-side (packets/s, packets): packets the client sent minus those the server reported lost, per
/// second of the test and in total.
pub fn udp_rx(v: &Value) -> Result<(f64, f64), String> {
    let sum = v.pointer("/end/sum").ok_or("iperf3 JSON has no end.sum")?;
    let get = |k: &str| {
        sum.get(k)
            .and_then(Value::as_f64)
            .ok_or(format!("iperf3 end.sum has no {k}"))
    };
    let (packets, lost, secs) = (get("packets")?, get("lost_packets")?, get("seconds")?);
    if secs <= 0.0 {
        return Err("iperf3 reported a zero-length test".into());
    }
    let got = (packets - lost).max(0.0);
    Ok((got / secs, got))
}

pub fn ping_p50(c1: &Container, c2: &Container) -> Result<f64, String> {
    let out = c1
        .exec(
            "ping",
            &[
                "-n",
                "-c",
                &PINGS.to_string(),
                "-i",
                "0.01",
                "-W",
                "1",
                &c2.ip().to_string(),
            ],
        )
        .map_err(|e| e.to_string())?;
    let mut times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split_once("time=")?.1.split_whitespace().next()?.parse().ok())
        .collect();
    if times.is_empty() {
        return Err(format!("no replies: {out}"));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
