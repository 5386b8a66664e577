//! Static mode: `/metrics` moves with traffic, `overlayctl peers` shows reachable and silent static peers,
//! and `overlayctl trace` names learned, local, flooded and IP destinations.

use super::exposition::{scrape, value, Sample};
use super::start_static;
use crate::common::overlay::{ctl_json, ping_ok, OVERLAYCTL};
use crate::common::testbed::{wait_until, Netns, Testbed};
use serde_json::Value;
use std::time::Duration;

/// Three hosts, overlayd on hosts 1 and 2 only, each naming both others as static peers: host 3 stays silent.
#[test]
fn metrics_peers_and_trace_in_static_mode() {
    let tb = Testbed::builder().hosts(3).build();
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let _d1 = start_static(h1, &[h2.underlay_ip(), h3.underlay_ip()]);
    let _d2 = start_static(h2, &[h1.underlay_ip(), h3.underlay_ip()]);

    // Metrics before traffic: parse, carry the network labels, and every name has the prefix.
    let before = scrape(h1);
    assert!(before.iter().all(|s| s.name.starts_with("overlayd_")));
    let net = [("network", "default"), ("vni", "1")];
    let frames = |s: &[Sample], dir: &str| {
        value(s, "overlayd_frames_total", &[net[0], net[1], ("direction", dir)]).expect("frames series")
    };
    for name in [
        "overlayd_frames_total",
        "overlayd_bytes_total",
        "overlayd_datagrams_total",
        "overlayd_drops_total",
        "overlayd_fdb_entries",
        "overlayd_peers",
        "overlayd_membership_changes_total",
        "overlayd_gso_segments_per_send_count",
        "overlayd_gro_segments_per_receive_count",
        "overlayd_probe_rtt_seconds_count",
    ] {
        assert!(before.iter().any(|s| s.name == name), "no {name} in /metrics");
    }
    assert!(value(&before, "overlayd_drops_total", &[("reason", "short")]).is_some());

    ping_ok(h1.container(), h2.container().ip(), 5);

    // Counters move with traffic; the FDB gauges and the batch histograms follow.
    let after = scrape(h1);
    assert!(
        frames(&after, "rx") >= frames(&before, "rx") + 5.0,
        "rx frames did not move"
    );
    assert!(
        frames(&after, "tx") >= frames(&before, "tx") + 5.0,
        "tx frames did not move"
    );
    let dg = |s: &[Sample], dir: &str| value(s, "overlayd_datagrams_total", &[("direction", dir)]).unwrap();
    assert!(dg(&after, "tx") > dg(&before, "tx") && dg(&after, "rx") > dg(&before, "rx"));
    assert!(value(&after, "overlayd_fdb_entries", &[("origin", "learned")]).unwrap() >= 1.0);
    assert!(value(&after, "overlayd_fdb_entries", &[("origin", "local")]).unwrap() >= 1.0);
    assert!(value(&after, "overlayd_gso_segments_per_send_count", &[]).unwrap() >= 5.0);
    assert!(value(&after, "overlayd_gro_segments_per_receive_count", &[]).unwrap() >= 5.0);

    // Static peers: host 2 reachable (its probes and traffic arrive), host 3 silent; the VTEP is shown.
    let reachable = wait_until(Duration::from_secs(30), || {
        let p = ctl_json(h1, "peers");
        p.as_array().is_some_and(|rows| {
            rows.iter().any(|r| {
                r["vtep"] == h2.underlay_ip().to_string()
                    && r["state"] == "reachable"
                    && r["last_seen_s"].is_number()
            })
        })
    });
    let peers = ctl_json(h1, "peers");
    assert!(reachable, "host 2 not reachable in `peers`: {peers}");
    let row3 = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vtep"] == h3.underlay_ip().to_string())
        .unwrap_or_else(|| panic!("no row for host 3: {peers}"));
    assert_eq!(row3["state"], "silent", "{peers}");
    assert!(row3.get("last_seen_s").is_none(), "{peers}");
    let table = h1.run(OVERLAYCTL, &["peers"]);
    eprintln!("$ overlayctl peers\n{table}");
    let header = table.lines().next().unwrap_or("");
    assert!(
        header.contains("VTEP") && header.contains("STATE") && header.contains("LAST_SEEN_S"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(&h3.underlay_ip().to_string()) && l.contains("silent")),
        "{table}"
    );

    // Probe round trips reach the histogram; the peers gauge agrees with the table.
    assert!(wait_until(Duration::from_secs(30), || {
        value(&scrape(h1), "overlayd_probe_rtt_seconds_count", &[]).unwrap_or(0.0) >= 1.0
    }));
    let m = scrape(h1);
    assert_eq!(
        value(
            &m,
            "overlayd_peers",
            &[("kind", "static"), ("state", "reachable")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "overlayd_peers", &[("kind", "static"), ("state", "silent")]),
        Some(1.0)
    );

    // Trace: a learned destination (container 2 behind host 2), a local one, an unknown one.
    let trace = |dst: &str| -> Value {
        let out = h1.run(OVERLAYCTL, &["trace", dst, "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("trace {dst}: {e}: {out}"))
    };
    let t = trace(h2.container().mac());
    assert_eq!(t["verdict"], "unicast", "{t}");
    assert_eq!(t["origin"], "learned", "{t}");
    assert_eq!(t["vtep"], h2.underlay_ip().to_string(), "{t}");
    assert_eq!(t["network"], "default", "{t}");
    assert_eq!(t["path_mtu"], 1450, "{t}");
    let t = trace(h1.container().mac());
    assert_eq!(t["verdict"], "local", "{t}");
    let t = trace("02:00:00:99:99:99");
    assert_eq!(t["verdict"], "flood", "{t}");
    let mut flood: Vec<String> = t["flood_to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    flood.sort();
    assert_eq!(
        flood,
        [h2.underlay_ip().to_string(), h3.underlay_ip().to_string()],
        "{t}"
    );
    // The human form names the same, and a bad destination or network is refused.
    let text = h1.run(OVERLAYCTL, &["trace", h2.container().mac()]);
    eprintln!("$ overlayctl trace {}\n{text}", h2.container().mac());
    eprintln!(
        "$ overlayctl trace 02:00:00:99:99:99\n{}",
        h1.run(OVERLAYCTL, &["trace", "02:00:00:99:99:99"])
    );
    eprintln!("$ overlayctl metrics\n{}", h1.run(OVERLAYCTL, &["metrics"]));
    assert!(text.contains("unicast") && text.contains("learned"), "{text}");
    assert!(h1.exec(OVERLAYCTL, &["trace", "not-a-mac"]).is_err());
    let e = h1
        .exec(OVERLAYCTL, &["trace", h2.container().mac(), "--network", "nope"])
        .unwrap_err();
    assert!(e.stderr.contains("no network"), "{e}");

    // An IP: unresolved until host 1 itself has talked to it over its bridge, then resolved through the
    // bridge's neighbour table to container 2's MAC.
    let ip2 = h2.container().ip().to_string();
    let t = trace(&ip2);
    assert_eq!(t["verdict"], "unresolved", "{t}");
    assert!(t["note"].as_str().unwrap().contains("neighbour table"), "{t}");
    h1.run("ip", &["addr", "add", "10.1.0.101/24", "dev", "ovl0"]);
    ping_ok(h1, h2.container().ip(), 1);
    let t = trace(&ip2);
    assert_eq!(t["mac"], h2.container().mac(), "{t}");
    assert_eq!(t["resolved_via"], "neighbour table of ovl0", "{t}");
    assert_eq!(t["verdict"], "unicast", "{t}");
    assert_eq!(t["vtep"], h2.underlay_ip().to_string(), "{t}");
}
