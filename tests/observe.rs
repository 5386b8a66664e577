//! End-to-end proof of the operator tools (issue 12): `/metrics` scraped during real traffic parses as
//! Prometheus text and moves with it; `overlayctl peers` shows static peers' VTEP, last datagram and state;
//! `overlayctl trace` for learned, local, control-plane and unknown destinations; `overlayctl diag` passes on a
//! healthy testbed and names the peer and port when an nftables rule drops UDP 4789 on one host, and the
//! interface when a container's veth has the wrong MTU.
//! Must never: assert timings (deadlines are functional and generous: the test machine is heavily loaded), or
//! send traffic outside the testbed's namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_json, ctl_socket, ping_ok, spawn_overlayd, OVERLAYCTL};
use common::testbed::{wait_until, CmdError, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

const READY: Duration = Duration::from_secs(30);

/// Starts overlayd on `host` and waits until its admin endpoint answers.
fn start(host: &Host, args: &[&str]) -> Daemon {
    let mut d = spawn_overlayd(host, args);
    let ready = wait_until(READY, || {
        !d.is_running() || host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok()
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(
        ready,
        "`{}` not ready within {READY:?}:\n{}",
        d.cmdline(),
        d.log()
    );
    d
}

/// Static mode: `--peer` every address of `peers`, `--local` our own.
fn start_static(host: &Host, peers: &[Ipv4Addr]) -> Daemon {
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    args.extend(["--local".to_string(), host.underlay_ip().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(host, &args)
}

// ---------------------------------------------------------------------------------------------------------
// A minimal Prometheus text-format (0.0.4) checker
// ---------------------------------------------------------------------------------------------------------

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A label set without `le`, as a sortable key.
type LabelKey = Vec<(String, String)>;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Parses `{k="v",…}`; values may hold `\"`, `\\` and `\n` escapes.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, r) = rest
            .split_once("=\"")
            .ok_or(format!("label without =\" in {s:?}"))?;
        if !valid_name(k) {
            return Err(format!("bad label name {k:?}"));
        }
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => v.push(c),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => return Err(format!("unterminated label value in {s:?}")),
            }
        };
        if out.insert(k.to_string(), v).is_some() {
            return Err(format!("duplicate label {k}"));
        }
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(out)
}

/// Checks the whole exposition: HELP/TYPE before samples, known types, valid names and labels, numeric
/// values, sample names matching their family's type, cumulative histogram buckets ending in `+Inf` = count.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            match (p.next(), p.next(), p.next()) {
                (Some("HELP"), Some(n), _) if valid_name(n) => {}
                (Some("TYPE"), Some(n), Some(t)) if valid_name(n) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err(format!("unknown type {t}")));
                    }
                    if types.insert(n.to_string(), t.to_string()).is_some() {
                        return Err(err("TYPE given twice".into()));
                    }
                }
                _ => return Err(err("malformed comment".into())),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').ok_or_else(|| err("no value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("value is not a number".into()))?,
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(l.strip_suffix('}').ok_or_else(|| err("no closing }".into()))?).map_err(err)?,
            ),
            None => (head, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let family = types
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .ok_or_else(|| err("sample before its TYPE".into()))?;
        let suffix = &name[family.len()..];
        let ok = match types[family].as_str() {
            "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
            _ => suffix.is_empty(),
        };
        if !ok {
            return Err(err(format!("sample name does not fit family {family}")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histogram buckets: cumulative, and +Inf equals _count, per label set.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<LabelKey, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket) {
            let mut l = s.labels.clone();
            let le = l.remove("le").ok_or(format!("{bucket} without le"))?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("le {le:?}"))?
            };
            series
                .entry(l.into_iter().collect())
                .or_default()
                .push((le, s.value));
        }
        for (l, b) in series {
            if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                return Err(format!("{family}{l:?}: buckets not cumulative: {b:?}"));
            }
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && s.labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>()
                            == l
                })
                .ok_or(format!("{family}{l:?}: no _count"))?;
            match b.last() {
                Some((le, n)) if le.is_infinite() && *n == count.value => {}
                other => {
                    return Err(format!(
                        "{family}{l:?}: last bucket {other:?} is not +Inf = {}",
                        count.value
                    ))
                }
            }
        }
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn scrape(host: &Host) -> Vec<Sample> {
    let text = host.run(OVERLAYCTL, &["metrics"]);
    parse_exposition(&text)
        .unwrap_or_else(|e| panic!("/metrics on {} is not Prometheus text: {e}\n{text}", host.ns()))
}

#[test]
fn exposition_checker_rejects_malformed_text() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"w\"} 3\n\
# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    let s = parse_exposition(good).unwrap();
    assert_eq!(s[0].labels["k"], "v\"w");
    for bad in [
        "a 1\n",                                                                          // no TYPE
        "# TYPE a counter\na{k=v} 1\n",                                                   // unquoted label
        "# TYPE a counter\na x\n",                                                        // not a number
        "# TYPE a bogus\n",                                                               // unknown type
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",                       // +Inf != count
        "# TYPE a counter\na_extra 1\n",                                                  // wrong suffix
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Metrics, static peers, trace (static mode)
// ---------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------------------------

fn diag(host: &Host) -> Result<String, CmdError> {
    host.exec(OVERLAYCTL, &["diag"])
}

/// nftables in the host's own namespace: drop UDP to `port` arriving there.
fn nft_drop_udp(host: &Host, port: u16) {
    let port = port.to_string();
    let steps: [&[&str]; 3] = [
        &["add", "table", "inet", "ovtest"],
        &[
            "add",
            "chain",
            "inet",
            "ovtest",
            "input",
            "{ type filter hook input priority 0; }",
        ],
        &[
            "add", "rule", "inet", "ovtest", "input", "udp", "dport", &port, "drop",
        ],
    ];
    for args in steps {
        if let Err(e) = host.exec("nft", args) {
            panic!("nft (apt-get install nftables) failed: {e}");
        }
    }
}

#[test]
fn diag_finds_a_firewalled_vxlan_port_and_a_wrong_veth_mtu() {
    let tb = Testbed::builder().hosts(2).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let _d1 = start_static(h1, &[h2.underlay_ip()]);
    let _d2 = start_static(h2, &[h1.underlay_ip()]);
    ping_ok(h1.container(), h2.container().ip(), 2);

    // Healthy: every check passes and the exit status is 0 (both peers have probed each other by now).
    let healthy = wait_until(Duration::from_secs(30), || diag(h1).is_ok() && diag(h2).is_ok());
    let out = diag(h1).unwrap_or_else(|e| panic!("diag on a healthy testbed failed: {e}"));
    assert!(healthy);
    eprintln!("diag on a healthy testbed:\n{out}");
    for check in [
        "bridge ovl0",
        "tap ovl1",
        "mtu",
        "offloads eth0",
        &format!("peer {} udp/4789", h2.underlay_ip()),
        "pmtu",
        "clock",
        "activity",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("✓ {check}"))),
            "no passing {check}:\n{out}"
        );
    }
    assert!(!out.contains('✗'), "{out}");
    let json: Value = serde_json::from_str(&h1.run(OVERLAYCTL, &["diag", "--json"])).unwrap();
    assert_eq!(json["ok"], true, "{json}");

    // UDP 4789 dropped on host 2 (its namespace only): diag on host 1 fails and names host 2 and the port.
    nft_drop_udp(h2, 4789);
    let e = diag(h1).expect_err("diag passed with UDP 4789 dropped on host 2");
    eprintln!("diag with UDP 4789 dropped on host 2:\n{}", e.stdout);
    assert_eq!(e.status.and_then(|s| s.code()), Some(1), "{e}");
    let line = e
        .stdout
        .lines()
        .find(|l| l.starts_with('✗'))
        .unwrap_or_else(|| panic!("no failed check:\n{}", e.stdout));
    assert!(
        line.contains(&h2.underlay_ip().to_string()) && line.contains("4789"),
        "{}",
        e.stdout
    );
    assert!(e.stdout.contains("fix: allow UDP 4789"), "{}", e.stdout);
    let json = h1
        .exec(OVERLAYCTL, &["diag", "--json"])
        .expect_err("diag --json passed");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    // Host 2 itself hears nothing on its VXLAN port from host 1 any more: within 30 s host 1 turns `silent`
    // there, and host 2's diag names it.
    let silent = wait_until(Duration::from_secs(60), || {
        diag(h2).is_err_and(|e| {
            e.stdout
                .lines()
                .any(|l| l.starts_with(&format!("✗ activity {}: silent", h1.underlay_ip())))
        })
    });
    let out2 = diag(h2).unwrap_or_else(|e| e.stdout);
    eprintln!("diag on host 2 with its UDP 4789 dropped:\n{out2}");
    assert!(silent, "{out2}");
    h2.run("nft", &["delete", "table", "inet", "ovtest"]);
    assert!(
        wait_until(Duration::from_secs(30), || diag(h1).is_ok()),
        "diag still failing after the rule went"
    );

    // A container's veth (its host side, a port of ovl0) with the wrong MTU: named, with the fix.
    h1.run("ip", &["link", "set", "vc1", "mtu", "1400"]);
    let e = diag(h1).expect_err("diag passed with vc1 at MTU 1400");
    eprintln!("diag with vc1 at MTU 1400:\n{}", e.stdout);
    assert!(
        e.stdout
            .lines()
            .any(|l| l.starts_with("✗ mtu vc1") && l.contains("1400") && l.contains("1450")),
        "{}",
        e.stdout
    );
    assert!(e.stdout.contains("ip link set vc1 mtu 1450"), "{}", e.stdout);
}

// ---------------------------------------------------------------------------------------------------------
// Cluster mode: a control-plane destination, membership metrics
// ---------------------------------------------------------------------------------------------------------

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
