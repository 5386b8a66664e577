//! Garbage VXLAN datagrams for robustness tests, sent from inside a host namespace.
//!
//! The test binary re-executes itself there (`ip netns exec <host> env OVT_GARBAGE_DST=… <test exe> --exact
//! garbage_sender`), so no extra tool and no `setns` is needed: a test file that uses [`send_from`] must
//! define `#[test] fn garbage_sender() { common::garbage::sender_main() }`, which does nothing in a normal run.
#![allow(dead_code)]

use super::overlay::{counter, ctl_json};
use super::testbed::{pseudo_random_bytes, Host, Netns};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Number of datagrams [`send_from`] sends.
pub const GARBAGE_COUNT: u64 = 10_000;

/// Drop reasons that datagrams from the underlay (garbage included) may be counted under (see
/// `dataplane::stats::DropReason`).
pub const UNDERLAY_DROPS: &[&str] = &[
    "short",
    "bad_flags",
    "unknown_vni",
    "bad_src_mac",
    "non_member",
    "spoofed_src",
    "vlan_tagged",
    "tap_write_error",
];

/// The data-path counters of `overlayctl stats --json` that the garbage tests account with.
#[derive(Debug, Clone)]
pub struct Stats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    pub drops: BTreeMap<String, u64>,
}

impl Stats {
    /// Read them from `host`; panics naming a counter that is absent or not a count.
    pub fn get(host: &Host) -> Stats {
        let v = ctl_json(host, "stats");
        let drops = v
            .get("drops")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("stats has no `drops` object: {v}"))
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    c.as_u64()
                        .unwrap_or_else(|| panic!("drops.{k} is not a count: {v}")),
                )
            })
            .collect();
        Stats {
            rx_frames: counter(&v, "rx_frames"),
            tx_frames: counter(&v, "tx_frames"),
            rx_datagrams: counter(&v, "rx_datagrams"),
            tx_datagrams: counter(&v, "tx_datagrams"),
            drops,
        }
    }
    /// Every drop, whatever the reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.values().sum()
    }
    /// Drops of the traffic under test: all but `bridge_mac`, the bridge's own frames (its IGMP/MLD
    /// reports), dropped on the TAP side by design (issue 10 §4): neither datagrams read nor frames delivered.
    pub fn traffic_drops(&self) -> u64 {
        self.drops_total() - self.drop_count("bridge_mac")
    }
    pub fn drop_count(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
    pub fn underlay_drops(&self) -> u64 {
        UNDERLAY_DROPS.iter().map(|r| self.drop_count(r)).sum()
    }
}

/// The datagrams, deterministic for a given `vni`: lengths 0..200, four kinds in turn, every one of which a
/// VXLAN endpoint for `vni` must drop:
/// 0. random bytes with the I flag cleared (or too short for a header),
/// 1. valid flags but another VNI,
/// 2. our VNI, truncated inside the inner Ethernet header,
/// 3. our VNI, inner source MAC multicast / broadcast / zero, inner destination broadcast.
pub fn datagrams(vni: u32) -> Vec<Vec<u8>> {
    let data = pseudo_random_bytes(0x06a7_ba6e, GARBAGE_COUNT as usize * 256);
    let vxlan = |d: &mut Vec<u8>, v: u32| {
        d[0] = 0x08; // I flag
        d[1..4].fill(0);
        d[4..7].copy_from_slice(&v.to_be_bytes()[1..]);
        d[7] = 0;
    };
    let mut out = Vec::with_capacity(GARBAGE_COUNT as usize);
    for (i, r) in data.chunks_exact(256).enumerate() {
        let len = r[0] as usize % 200;
        let mut d = r[1..1 + len.max(22)].to_vec();
        match i % 4 {
            0 => {
                d.truncate(len);
                if let Some(b) = d.first_mut() {
                    *b &= !0x08;
                }
            }
            1 => {
                vxlan(&mut d, (vni + 1 + u32::from(r[200])) & 0xff_ffff);
                d.truncate(len.max(8));
            }
            2 => {
                vxlan(&mut d, vni);
                d.truncate(8 + len % 14);
            }
            _ => {
                vxlan(&mut d, vni);
                d[8..14].copy_from_slice(&[0xff; 6]);
                let src: [u8; 6] = match r[201] % 3 {
                    0 => [0x01, 0x00, 0x5e, 0x00, 0x00, r[202]],
                    1 => [0xff; 6],
                    _ => [0; 6],
                };
                d[14..20].copy_from_slice(&src);
                d.truncate(len.max(22));
            }
        }
        out.push(d);
    }
    out
}

/// Sends the [`GARBAGE_COUNT`] datagrams from `host`'s namespace to `dst:port`, at a bounded rate.
pub fn send_from(host: &Host, dst: Ipv4Addr, port: u16, vni: u32) {
    send_n_from(host, dst, port, vni, GARBAGE_COUNT);
}

/// Sends `count` datagrams (the [`datagrams`] over and over) from `host`'s namespace to `dst:port`, at a
/// bounded rate (≤ ~50 000/s).
pub fn send_n_from(host: &Host, dst: Ipv4Addr, port: u16, vni: u32, count: u64) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let exe = exe.to_string_lossy();
    let d = format!("OVT_GARBAGE_DST={dst}:{port}");
    let v = format!("OVT_GARBAGE_VNI={vni}");
    let n = format!("OVT_GARBAGE_COUNT={count}");
    let out = host.run(
        "env",
        &[
            &d,
            &v,
            &n,
            &exe,
            "--exact",
            "garbage_sender",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    assert!(
        out.contains(&format!("garbage sent: {count}\n")),
        "garbage sender output:\n{out}"
    );
}

/// Body of the `garbage_sender` helper test: sends if `OVT_GARBAGE_DST` is set, otherwise returns.
pub fn sender_main() {
    let Ok(dst) = std::env::var("OVT_GARBAGE_DST") else {
        return;
    };
    let vni: u32 = std::env::var("OVT_GARBAGE_VNI")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let count: u64 = std::env::var("OVT_GARBAGE_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GARBAGE_COUNT);
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let all = datagrams(vni);
    for (i, d) in all.iter().cycle().take(count as usize).enumerate() {
        sock.send_to(d, &dst)
            .unwrap_or_else(|e| panic!("send_to {dst}: {e}"));
        // Bounded rate (≤ ~50 000/s) so the receiver's socket buffer need not absorb the whole burst.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    println!("garbage sent: {count}");
}

/// `Udp: … InErrors … RcvbufErrors` of /proc/net/snmp in the host's namespace: datagrams the kernel dropped
/// before overlayd could read them.
pub fn kernel_udp_drops(host: &Host) -> u64 {
    let snmp = host.run("cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = match (udp.next(), udp.next()) {
        (Some(n), Some(v)) => (n, v),
        _ => panic!("no Udp lines in /proc/net/snmp of {}:\n{snmp}", host.ns()),
    };
    let idx = names.split_whitespace().position(|n| n == "InErrors");
    let idx = idx.unwrap_or_else(|| panic!("no Udp InErrors in /proc/net/snmp:\n{snmp}"));
    values
        .split_whitespace()
        .nth(idx)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
