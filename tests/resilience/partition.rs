//! §6 partition, then heal: both sides notice the cut, each side learns a new MAC, and after the heal
//! every FDB is equal again.

use super::{
    all_alive, cluster_pinging_all, log_len, members, nft_delete, nft_table, one_at_a_time, rejoined,
};
use crate::common::overlay::{ctl_json, rows, str_field};
use crate::common::testbed::{wait_until, Host, Netns, Testbed};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The replicated part of a host's FDB as `mac → vtep`: `local` entries (VTEP: the host itself) and
/// `control` entries. `learned` entries are left out: they record which data frames this host happened to
/// receive (they differ between hosts by design and age out), they are not state the control plane syncs.
fn fdb_view(host: &Host) -> BTreeMap<String, String> {
    rows(&ctl_json(host, "fdb"))
        .iter()
        .filter_map(|r| {
            let vtep = match str_field(r, "origin") {
                "local" => host.underlay_ip().to_string(),
                "control" => str_field(r, "vtep").to_string(),
                _ => return None,
            };
            Some((str_field(r, "mac").to_ascii_lowercase(), vtep))
        })
        .collect()
}

/// Host 3 is cut off (nftables drops everything on its `eth0`), both sides notice, a new MAC appears on
/// each side, then the partition heals: every FDB ends up equal. Prints the time from the heal; the issue's
/// target is 1 s, the assertion is a functional 30 s.
#[test]
fn partition_then_heal_makes_fdbs_equal() {
    let _one = one_at_a_time();
    let tb = Testbed::builder().hosts(3).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let daemons = cluster_pinging_all(&tb, &hosts);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let v: Vec<_> = hosts.iter().map(|h| fdb_view(h)).collect();
            v.iter().all(|f| f.len() >= 3 && *f == v[0])
        }),
        "FDBs not equal before the partition"
    );
    let (h3, cut_at) = (hosts[2], Instant::now());
    nft_table(h3, "ovtpart", "iifname \"eth0\" drop", "oifname \"eth0\" drop");
    let noticed = wait_until(Duration::from_secs(20), || {
        let side_a = hosts[..2].iter().all(|h| {
            members(h)
                .iter()
                .all(|(a, s, _)| !a.starts_with(&format!("{}:", h3.underlay_ip())) || s == "dead")
        });
        let side_b = members(h3).iter().filter(|(_, s, _)| s == "dead").count() == 2;
        side_a && side_b
    });
    let notice = cut_at.elapsed();
    assert!(
        noticed,
        "the partition was not noticed within 20 s: {:?} / {:?}",
        members(hosts[0]),
        members(h3)
    );

    // A new MAC on each side: container 1 and container 3 change their address and send (an ARP broadcast),
    // so their host's bridge learns it and overlayd advertises it.
    let new_macs = ["02:00:00:00:09:01", "02:00:00:00:09:03"];
    for (c, mac) in [(hosts[0].container(), new_macs[0]), (h3.container(), new_macs[1])] {
        c.run("ip", &["link", "set", "eth0", "address", mac]);
        let _ = c.exec(
            "ping",
            &["-c", "1", "-W", "1", &hosts[1].container().ip().to_string()],
        );
    }
    let local_on = |h: &Host, mac: &str| fdb_view(h).get(mac) == Some(&h.underlay_ip().to_string());
    assert!(
        wait_until(Duration::from_secs(10), || local_on(hosts[0], new_macs[0])
            && local_on(h3, new_macs[1])),
        "the new MACs did not become local on their hosts"
    );

    // The cut-off host declares the others down too: after the heal they rejoin with renewed identities
    // (SWIM: a death cannot be refuted) while that death is still being gossiped.
    let marks: Vec<usize> = daemons.iter().map(log_len).collect();
    let healed_at = Instant::now();
    nft_delete(h3, "ovtpart");
    let mut alive_after = None;
    let equal = wait_until(Duration::from_secs(30), || {
        if alive_after.is_none() && all_alive(&hosts) {
            alive_after = Some(healed_at.elapsed());
        }
        let v: Vec<_> = hosts.iter().map(|h| fdb_view(h)).collect();
        v.iter().all(|f| *f == v[0]) && new_macs.iter().all(|m| v[0].contains_key(*m))
    });
    let converged = healed_at.elapsed();
    // The FDBs may agree before every member lists every other alive again; membership must heal too.
    let healed = wait_until(Duration::from_secs(30), || all_alive(&hosts));
    if healed && alive_after.is_none() {
        alive_after = Some(healed_at.elapsed());
    }
    let rejoins = rejoined(&daemons, &marks);
    println!(
        "partition of host 3 noticed after {notice:?}; after the heal: all alive after {alive_after:?}, FDBs equal \
         (with both new MACs) after {converged:?} (target 1 s); (host, rejoins): {rejoins:?}"
    );
    if !equal {
        for h in &hosts {
            eprintln!(
                "host {} fdb {} peers {:?}",
                h.index(),
                ctl_json(h, "fdb"),
                members(h)
            );
        }
    }
    assert!(equal, "FDBs not equal within 30 s of the heal");
    assert!(
        healed,
        "members not all alive within 30 s of the heal (each host must list each host once; (host, rejoins) \
         {rejoins:?}): {:?}",
        hosts.iter().map(|h| members(h)).collect::<Vec<_>>()
    );
}
