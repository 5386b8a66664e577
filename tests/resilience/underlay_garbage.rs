//! §8 garbage during a transfer: garbage datagrams at the VXLAN port while a TCP stream runs are counted
//! under underlay drop reasons, and the stream arrives byte-identical.

use super::{long, one_at_a_time, start_static_pair};
use crate::common::garbage;
use crate::common::overlay::{ctl_json, ping_ok};
use crate::common::testbed::{tcp_transfer, wait_until, Host, Netns, Testbed};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Drop reasons that garbage from the underlay may be counted under (as in tests/e2e.rs).
const UNDERLAY_DROPS: &[&str] = &[
    "short",
    "bad_flags",
    "unknown_vni",
    "bad_src_mac",
    "non_member",
    "spoofed_src",
    "vlan_tagged",
    "tap_write_error",
];

#[derive(Debug, Clone)]
struct Stats {
    tx_frames: u64,
    rx_datagrams: u64,
    drops: BTreeMap<String, u64>,
}

impl Stats {
    fn get(host: &Host) -> Stats {
        let v = ctl_json(host, "stats");
        let n = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("no `{k}` in {v}"))
        };
        let drops = v
            .get("drops")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no drops in {v}"))
            .iter()
            .map(|(k, c)| (k.clone(), c.as_u64().unwrap_or(0)))
            .collect();
        Stats {
            tx_frames: n("tx_frames"),
            rx_datagrams: n("rx_datagrams"),
            drops,
        }
    }
    /// Drops of traffic, leaving out `bridge_mac`: the bridge's own frames (IGMP/MLD reports) dropped on the
    /// TAP side, which are neither datagrams read nor frames delivered.
    fn drops_total(&self) -> u64 {
        self.drops.values().sum::<u64>() - self.drops.get("bridge_mac").copied().unwrap_or(0)
    }
    fn underlay_drops(&self) -> u64 {
        UNDERLAY_DROPS
            .iter()
            .map(|k| self.drops.get(*k).copied().unwrap_or(0))
            .sum()
    }
}

fn kernel_udp_drops(host: &Host) -> u64 {
    let snmp = host.run("cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    let idx = names.split_whitespace().position(|n| n == "InErrors");
    let idx = idx.unwrap_or_else(|| panic!("no Udp InErrors in /proc/net/snmp:\n{snmp}"));
    values
        .split_whitespace()
        .nth(idx)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 50 000 garbage datagrams (10^6 with `OVERLAYD_LONG_TESTS=1`) at host 1's VXLAN port while container 2
/// sends a TCP stream to container 1: overlayd survives, the transfer is byte-identical, and every datagram
/// read is delivered or counted under exactly one drop reason, the garbage under underlay reasons.
#[test]
fn garbage_during_tcp_transfer_is_counted_and_the_transfer_completes() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (mut d1, _d2) = start_static_pair(h1, h2);
    let (c1, c2) = (tb.container(1), tb.container(2));
    ping_ok(c2, c1.ip(), 2);
    std::thread::sleep(Duration::from_millis(300));
    let count: u64 = if long() { 1_000_000 } else { 50_000 };
    // Transfers of `mb` MiB, one after the other, until the garbage has all been sent: the stream is busy
    // for the whole run on a machine of any speed. Each one must arrive byte-identical.
    let mb = 16;
    let before = Stats::get(h1);
    let kernel_before = kernel_udp_drops(h1);
    let t0 = Instant::now();
    let garbage_done = AtomicBool::new(false);
    let (transfer, transfer_time, garbage_time) = std::thread::scope(|s| {
        let tr = s.spawn(|| {
            let mut n = 0u16;
            loop {
                let r = tcp_transfer(c2, c1, 5301 + n, mb, Duration::from_secs(120));
                n += 1;
                if r.is_err() || garbage_done.load(Ordering::Relaxed) {
                    return (r.map(|()| n), t0.elapsed());
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        garbage::send_n_from(h2, h1.underlay_ip(), 4789, 1, count);
        let g = t0.elapsed();
        garbage_done.store(true, Ordering::Relaxed);
        let (r, t) = tr.join().unwrap();
        (r, t, g)
    });
    let settled = wait_until(Duration::from_secs(10), || {
        let s = Stats::get(h1);
        s.underlay_drops() - before.underlay_drops() + kernel_udp_drops(h1) - kernel_before >= count
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = Stats::get(h1);
    let kernel_lost = kernel_udp_drops(h1) - kernel_before;
    let rx = after.rx_datagrams - before.rx_datagrams;
    let to_tap = after.tx_frames - before.tx_frames;
    let dropped = after.drops_total() - before.drops_total();
    let underlay = after.underlay_drops() - before.underlay_drops();
    let detail = format!(
        "garbage sent {count} in {garbage_time:?}; TCP c2→c1 in {mb} MiB transfers for {transfer_time:?}: \
         {transfer:?} transfers; host 1: \
         rx_datagrams +{rx}, to TAP +{to_tap}, drops +{dropped} (underlay reasons +{underlay}), kernel UDP InErrors \
         +{kernel_lost}\nbefore {before:?}\nafter {after:?}"
    );
    println!("{detail}");
    assert!(d1.is_running(), "overlayd on host 1 died:\n{}", d1.log());
    transfer.unwrap_or_else(|e| panic!("{e}\n{detail}"));
    assert!(
        garbage_time < transfer_time,
        "the garbage did not all arrive during the transfer: {detail}"
    );
    assert!(settled, "garbage not all accounted for within 10 s: {detail}");
    assert_eq!(rx, to_tap + dropped, "rx_datagrams ≠ delivered + drops: {detail}");
    // Garbage is counted under underlay reasons (or lost in the kernel's socket buffer); the transfer's own
    // datagrams are valid, so nothing beyond the garbage is counted there.
    assert!(
        underlay <= count,
        "more underlay drops than garbage sent: {detail}"
    );
    assert!(
        underlay + kernel_lost >= count,
        "garbage missing from the counters: {detail}"
    );
    ping_ok(c1, c2.ip(), 2);
}
