//! §6 loss: 20 % underlay loss each way on one host declares no member dead.

use super::{
    all_alive, cluster_pinging_all, log_len, long, members, membership_faults, nft_delete, nft_table,
    one_at_a_time, rejoined,
};
use crate::common::testbed::{Host, Netns, Testbed};
use std::time::{Duration, Instant};

/// 20 % loss each way on host 1's underlay `eth0` (nftables `numgen random`), 10 s (60 s with
/// `OVERLAYD_LONG_TESTS=1`): no member is declared dead, polled on every host throughout.
#[test]
fn underlay_loss_20_percent_declares_no_member_dead() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(3).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let daemons = cluster_pinging_all(&tb, &hosts);
    let baseline: Vec<_> = hosts.iter().map(|h| members(h)).collect();
    let lossy = hosts[0];
    let drop = "numgen random mod 100 < 20 counter drop";
    nft_table(
        lossy,
        "ovtloss",
        &format!("iifname \"eth0\" {drop}"),
        &format!("oifname \"eth0\" {drop}"),
    );
    let secs = if long() { 60 } else { 10 };
    let marks: Vec<usize> = daemons.iter().map(log_len).collect();
    let (start, end) = (Instant::now(), Instant::now() + Duration::from_secs(secs));
    let (mut polls, mut suspect_seen, mut faults) = (0u32, 0u32, Vec::new());
    while Instant::now() < end {
        for (h, b) in hosts.iter().zip(&baseline) {
            for f in membership_faults(h, b, hosts.len()) {
                faults.push(format!("t={:.1}s {f}", start.elapsed().as_secs_f64()));
            }
            suspect_seen += members(h).iter().filter(|(_, s, _)| s == "suspect").count() as u32;
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // The loss really was there: the rule's packet counters.
    let rules = lossy.run("nft", &["list", "table", "inet", "ovtloss"]);
    nft_delete(lossy, "ovtloss");
    let dropped: Vec<u64> = rules
        .split("packets ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect();
    // (host, times it was declared down and rejoined during the loss)
    let rejoins = rejoined(&daemons, &marks);
    println!(
        "loss 20% each way on host 1 eth0 for {secs} s: {polls} polls of 3 hosts, suspect rows seen {suspect_seen}, \
         faults {}, rejoins {rejoins:?}; nft drops in/out {dropped:?}",
        faults.len()
    );
    assert!(
        dropped.len() == 2 && dropped.iter().all(|&d| d > 0),
        "the loss rules dropped nothing, so this test proved nothing:\n{rules}"
    );
    assert!(
        faults.is_empty() && rejoins.is_empty(),
        "false deaths under 20% loss: {faults:#?}; nodes that rejoined: {rejoins:?}"
    );
    assert!(all_alive(&hosts), "not all alive after the loss ended");
}
