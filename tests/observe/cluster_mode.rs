//! Cluster mode: a control-plane destination in `overlayctl trace`, membership and gossip metrics, and
//! `overlayctl diag` checking gossip.

use super::exposition::{scrape, value};
use super::{diag, start};
use crate::common::overlay::{ctl_json, ctl_socket, ping_ok, OVERLAYCTL};
use crate::common::testbed::{wait_until, Host, Netns, Testbed};
use serde_json::Value;
use std::time::Duration;

#[test]
fn trace_and_metrics_in_cluster_mode() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let sd = |h: &Host| {
        tb.log_dir()
            .join(format!("state-h{}", h.index()))
            .to_string_lossy()
            .into_owned()
    };
    let _d1 = start(
        h1,
        &[
            "--init-cluster",
            "--local",
            &h1.underlay_ip().to_string(),
            "--state-dir",
            &sd(h1),
        ],
    );
    let tok = ctl_socket(h1, &["token"]).unwrap_or_else(|e| panic!("{e}"));
    let _d2 = start(
        h2,
        &[
            "--peer",
            &h1.underlay_ip().to_string(),
            "--token",
            tok.trim(),
            "--state-dir",
            &sd(h2),
        ],
    );
    let both_alive = || {
        ctl_json(h1, "peers")
            .as_array()
            .is_some_and(|r| r.iter().filter(|m| m["state"] == "alive").count() == 2)
    };
    assert!(
        wait_until(Duration::from_secs(40), both_alive),
        "cluster did not form: {}",
        ctl_json(h1, "peers")
    );
    ping_ok(h2.container(), h1.container().ip(), 2);

    // Container 2's MAC comes to host 1 from the control plane.
    let mac = h2.container().mac();
    let control = wait_until(Duration::from_secs(30), || {
        let out = h1.run(OVERLAYCTL, &["trace", mac, "--json"]);
        serde_json::from_str::<Value>(&out).is_ok_and(|t| t["origin"] == "control")
    });
    let t: Value = serde_json::from_str(&h1.run(OVERLAYCTL, &["trace", mac, "--json"])).unwrap();
    assert!(control, "{t}");
    assert_eq!(t["verdict"], "unicast", "{t}");
    assert_eq!(t["vtep"], h2.underlay_ip().to_string(), "{t}");
    let t: Value =
        serde_json::from_str(&h1.run(OVERLAYCTL, &["trace", "02:00:00:99:99:98", "--json"])).unwrap();
    assert_eq!(t["verdict"], "flood", "{t}");
    assert_eq!(
        t["flood_to"],
        serde_json::json!([h2.underlay_ip().to_string()]),
        "{t}"
    );

    // Membership shows in the metrics: members by state, changes counted.
    let m = scrape(h1);
    assert!(value(&m, "overlayd_peers", &[("kind", "member"), ("state", "alive")]).unwrap() >= 1.0);
    assert!(value(&m, "overlayd_membership_changes_total", &[]).unwrap() >= 1.0);
    // Gossip round trips are sampled from the open QUIC connections every second.
    let sampled = wait_until(Duration::from_secs(10), || {
        value(&scrape(h1), "overlayd_gossip_rtt_seconds_count", &[]).unwrap_or(0.0) >= 1.0
    });
    assert!(sampled, "no gossip RTT sample within 10 s: {:?}", scrape(h1));
    // Diag in cluster mode checks gossip too, and passes.
    let ok = wait_until(Duration::from_secs(30), || diag(h1).is_ok());
    let out = h1.exec(OVERLAYCTL, &["diag"]).unwrap_or_else(|e| e.stdout);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("✓ gossip {}:", h2.underlay_ip())), "{out}");
}
