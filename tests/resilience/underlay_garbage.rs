//! §8 garbage during a transfer: garbage datagrams at the VXLAN port while a TCP stream runs are counted
//! under underlay drop reasons, and the stream arrives byte-identical.

use super::{long, one_at_a_time, start_static_pair};
use crate::common::garbage::{self, kernel_udp_drops, Stats};
use crate::common::overlay::ping_ok;
use crate::common::testbed::{tcp_transfer, wait_until, Testbed};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    let dropped = after.traffic_drops() - before.traffic_drops();
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
