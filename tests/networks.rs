//! Issue 10 §1, end to end: one overlayd per host serves two networks (`--network a:100 --network b:200`) on
//! one UDP port. Three hosts in static mode; network a's endpoints are the testbed's containers (10.1.0.N,
//! veth into `ovbr100`), network b's a veth per host (10.2.0.N, its peer in `ovbr200`). Same-network pings
//! work across hosts; captures on network b's TAP and bridge see none of network a's frames (its
//! broadcasts included) while the same capture on a's TAP does; `network ls` and `fdb --network` show each
//! network apart.

mod common;

use common::capture::{text_capture, text_lines};
use common::overlay::{ctl_json, ping_ok, rows, spawn_overlayd, str_field, OVERLAYCTL};
use common::testbed::{wait_until, BridgeMode, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

fn start(host: &Host, peers: &[Ipv4Addr]) -> Daemon {
    let mut args: Vec<String> = vec![
        "--local".into(),
        host.underlay_ip().to_string(),
        "--network".into(),
        "a:100".into(),
        "--network".into(),
        "b:200:10.2.0.0/24".into(),
    ];
    for p in peers {
        args.extend(["--peer".into(), p.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = spawn_overlayd(host, &args);
    let ready = wait_until(Duration::from_secs(15), || {
        !d.is_running()
            || (host.link_exists("ovl100")
                && host.link_exists("ovl200")
                && host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok())
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 15 s:\n{}", d.cmdline(), d.log());
    d
}

/// Network b's endpoint on host N: `vbN` (10.2.0.N/24, MAC 02:00:00:00:02:0N) in the host namespace, its
/// peer `vbNp` in `ovbr200`.
fn attach_b(host: &Host) {
    let n = host.index();
    let mac = format!("02:00:00:00:02:{n:02x}");
    host.run(
        "ip",
        &[
            "link",
            "add",
            &format!("vb{n}"),
            "mtu",
            "1450",
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            &format!("vb{n}p"),
            "mtu",
            "1450",
        ],
    );
    host.run(
        "ip",
        &["addr", "add", &format!("10.2.0.{n}/24"), "dev", &format!("vb{n}")],
    );
    host.run(
        "ip",
        &["link", "set", &format!("vb{n}p"), "master", "ovbr200", "up"],
    );
    host.run("ip", &["link", "set", &format!("vb{n}"), "up"]);
}

fn ctl(host: &Host, args: &[&str]) -> Value {
    let out = host.run(OVERLAYCTL, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`overlayctl {args:?}` is not JSON ({e}):\n{out}"))
}

#[test]
fn two_networks_on_three_hosts_stay_isolated() {
    let tb = Testbed::builder().hosts(3).bridge(BridgeMode::Daemon).build();
    let ips: Vec<Ipv4Addr> = tb.hosts().iter().map(Host::underlay_ip).collect();
    let mut daemons = Vec::new();
    for h in tb.hosts() {
        let peers: Vec<Ipv4Addr> = ips.iter().copied().filter(|p| *p != h.underlay_ip()).collect();
        daemons.push(start(h, &peers));
    }
    for h in tb.hosts() {
        h.run(
            "ip",
            &[
                "link",
                "set",
                &format!("vc{}", h.index()),
                "master",
                "ovbr100",
                "up",
            ],
        );
        attach_b(h);
    }
    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    // Network a's MACs: the testbed's containers.
    let a_macs: Vec<String> = tb
        .hosts()
        .iter()
        .map(|h| h.container().mac().to_string())
        .collect();
    let a_filter = a_macs
        .iter()
        .map(|m| format!("ether host {m}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let on_b_tap = text_capture(h2, "ovl200", &a_filter);
    let on_b_bridge = text_capture(h2, "ovbr200", &a_filter);
    let on_a_tap = text_capture(h2, "ovl100", &a_filter);

    // Same-network traffic works across hosts, in both networks (ARP broadcasts first).
    ping_ok(tb.container(1), tb.container(2).ip(), 3);
    ping_ok(tb.container(1), tb.container(3).ip(), 3);
    ping_ok(tb.container(3), tb.container(2).ip(), 3);
    ping_ok(h1, Ipv4Addr::new(10, 2, 0, 2), 3);
    ping_ok(h3, Ipv4Addr::new(10, 2, 0, 1), 3);
    // Network b has no route to network a's addresses: a ping from a container to b's range goes nowhere.
    assert!(tb.container(1).ping(Ipv4Addr::new(10, 2, 0, 2), 1).is_err());

    let seen_b_tap = text_lines(on_b_tap);
    let seen_b_bridge = text_lines(on_b_bridge);
    let seen_a_tap = text_lines(on_a_tap);
    assert!(
        !seen_a_tap.is_empty(),
        "the capture on network a's TAP saw none of a's frames, so the isolation check below proves nothing"
    );
    assert!(
        seen_b_tap.is_empty(),
        "network a's frames on b's TAP ovl200: {seen_b_tap:#?}"
    );
    assert!(
        seen_b_bridge.is_empty(),
        "network a's frames on b's bridge ovbr200: {seen_b_bridge:#?}"
    );

    // `network ls --json` lists both networks with their devices.
    let nets = ctl(h1, &["network", "ls", "--json"]);
    let got: Vec<(String, u64, String, String, String)> = rows(&nets)
        .iter()
        .map(|n| {
            (
                str_field(n, "name").to_string(),
                n["vni"].as_u64().unwrap_or(0),
                str_field(n, "bridge").to_string(),
                str_field(n, "tap").to_string(),
                str_field(n, "subnet").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), 100, "ovbr100".into(), "ovl100".into(), String::new()),
            (
                "b".into(),
                200,
                "ovbr200".into(),
                "ovl200".into(),
                "10.2.0.0/24".into()
            ),
        ],
        "{nets}"
    );
    // The table rendering has both too.
    let table = h1.run(OVERLAYCTL, &["network", "ls"]);
    assert!(table.contains("ovbr100") && table.contains("ovbr200"), "{table}");

    // `fdb --network a` shows only a's MACs (all three containers), `--network b` only b's.
    let fdb_a = ctl(h1, &["fdb", "--network", "a", "--json"]);
    let macs_a: Vec<String> = rows(&fdb_a)
        .iter()
        .map(|r| str_field(r, "mac").to_lowercase())
        .collect();
    for m in &a_macs {
        assert!(macs_a.contains(m), "fdb --network a lacks {m}: {fdb_a}");
    }
    assert!(
        rows(&fdb_a)
            .iter()
            .all(|r| str_field(r, "network") == "a" && r["vni"] == 100),
        "{fdb_a}"
    );
    assert!(
        !macs_a.iter().any(|m| m.starts_with("02:00:00:00:02:")),
        "b's MACs in a's FDB: {fdb_a}"
    );
    let fdb_b = ctl(h1, &["fdb", "--network", "b", "--json"]);
    let macs_b: Vec<String> = rows(&fdb_b)
        .iter()
        .map(|r| str_field(r, "mac").to_lowercase())
        .collect();
    assert!(macs_b.contains(&"02:00:00:00:02:02".to_string()), "{fdb_b}");
    assert!(
        !macs_b.iter().any(|m| a_macs.contains(m)),
        "a's MACs in b's FDB: {fdb_b}"
    );
    // The unfiltered FDB has both, with the network column.
    let all = ctl_json(h1, "fdb");
    assert!(rows(&all).iter().any(|r| str_field(r, "network") == "a"));
    assert!(rows(&all).iter().any(|r| str_field(r, "network") == "b"));
    // An unknown network is an error naming the served ones.
    let e = h1.exec(OVERLAYCTL, &["fdb", "--network", "c"]).unwrap_err();
    assert!(e.to_string().contains("serves a, b"), "{e}");

    // Per-network counters: network b's stats count b's frames only.
    let st_a = ctl(h1, &["stats", "--network", "a", "--json"]);
    let st_b = ctl(h1, &["stats", "--network", "b", "--json"]);
    assert_eq!(str_field(&st_a, "network"), "a");
    assert!(st_a["rx_frames"].as_u64().unwrap_or(0) > 0 && st_b["rx_frames"].as_u64().unwrap_or(0) > 0);
    let peers_b = ctl(h1, &["peers", "--network", "b", "--json"]);
    assert_eq!(rows(&peers_b).len(), 2, "{peers_b}");
    assert!(
        rows(&peers_b).iter().all(|r| str_field(r, "network") == "b"),
        "{peers_b}"
    );

    // Metrics carry one series set per network.
    let metrics = h1.run(OVERLAYCTL, &["metrics"]);
    for net in [r#"network="a",vni="100""#, r#"network="b",vni="200""#] {
        let rx = metrics
            .lines()
            .find(|l| {
                l.starts_with("overlayd_frames_total{") && l.contains(net) && l.contains(r#"direction="rx""#)
            })
            .unwrap_or_else(|| panic!("no rx frames series for {net}:\n{metrics}"));
        let n: f64 = rx.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(n > 0.0, "{rx}");
    }

    // Each network has its own device watcher: network b's TAP deleted on host 1 comes back (on its bridge)
    // and b works again, while a keeps working.
    h1.run("ip", &["link", "del", "ovl200"]);
    assert!(
        wait_until(Duration::from_secs(5), || h1
            .exec("ip", &["-o", "link", "show", "ovl200"])
            .is_ok_and(|l| l.contains("master ovbr200") && l.contains(",UP"))),
        "ovl200 not restored:\n{}",
        daemons[0].log()
    );
    ping_ok(h1, Ipv4Addr::new(10, 2, 0, 3), 3);
    ping_ok(tb.container(1), tb.container(2).ip(), 3);

    // Both networks share one UDP port: one socket bound to 4789.
    let socks = h1.run("ss", &["-Hunl", "sport", "=", ":4789"]);
    assert_eq!(socks.lines().count(), 1, "{socks}");
    for mut d in daemons {
        let _ = d.signal("TERM");
        assert!(
            d.wait_timeout(Duration::from_secs(10)).is_some(),
            "overlayd did not stop:\n{}",
            d.log()
        );
    }
    // The bridges it created are gone once their ports are (the veths stay plugged in here, so the bridges
    // stay too); the TAPs are gone.
    for h in tb.hosts() {
        assert!(
            !h.link_exists("ovl100") && !h.link_exists("ovl200"),
            "TAPs left behind in {}",
            h.ns()
        );
    }
}

/// The manager's runtime API (`Networks::add` / `remove`, which the cluster glue and admin endpoints call):
/// run as `networks_manager_helper` inside a testbed host namespace (it creates links).
#[test]
fn networks_are_added_and_removed_at_runtime() {
    let tb = Testbed::builder()
        .hosts(1)
        .containers(false)
        .bridge(BridgeMode::Daemon)
        .build();
    let h = tb.host(1);
    let exe = std::env::current_exe().unwrap();
    let state = format!("OVERLAYD_NETS_STATE={}", h.log_dir().join("nets-state").display());
    let out = h.exec(
        "env",
        &[
            &state,
            exe.to_str().unwrap(),
            "--ignored",
            "--exact",
            "networks_manager_helper",
            "--nocapture",
        ],
    );
    match out {
        Ok(o) => assert!(o.contains("1 passed"), "helper did not pass:\n{o}"),
        Err(e) => panic!("networks_manager_helper failed: {e}"),
    }
    for dev in ["ovl100", "ovbr100", "ovl200", "ovbr200"] {
        assert!(!h.link_exists(dev), "{dev} left behind");
    }
}

/// Not a test by itself: run by `networks_are_added_and_removed_at_runtime` inside a testbed namespace.
#[test]
#[ignore = "helper: run by networks_are_added_and_removed_at_runtime inside a testbed namespace"]
fn networks_manager_helper() {
    use dataplane::engine::PeerSet;
    use dataplane::network::NetworkTable;
    use overlayd::host::netlink::link_exists;
    use overlayd::netspec::NetworkOpt;
    use overlayd::networks::{Networks, NetworksError, Settings};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::time::Instant;

    let state = std::path::PathBuf::from(std::env::var("OVERLAYD_NETS_STATE").expect("OVERLAYD_NETS_STATE"));
    std::fs::create_dir_all(&state).unwrap();
    let local = std::net::IpAddr::from([10, 0, 0, 1]);
    let epoch = Instant::now();
    let observe = Arc::new(overlayd::observe::Observe::new(
        Vec::new(),
        local,
        false,
        Arc::new(dataplane::activity::PeerActivity::new(epoch, Vec::new())),
    ));
    let table = Arc::new(NetworkTable::default());
    let waker = Arc::new(dataplane::io::Waker::new().unwrap());
    let (fatal, _fatal_rx) = tokio::sync::mpsc::unbounded_channel();
    let nets = Networks::new(
        Settings {
            local,
            default_mtu: 1400,
            offload: true,
            state_dir: state,
            fdb_max: 64,
            ageing: Duration::from_secs(300),
            max_local_macs: 16,
            epoch,
            // Multiqueue TAPs (`--workers 2`) come and go at runtime like single-queue ones.
            workers: 2,
            flood: Arc::new(PeerSet::default()),
        },
        table.clone(),
        vec![waker.clone()],
        observe.clone(),
        fatal,
    );
    let spec = |s: &str| s.parse::<NetworkOpt>().unwrap().check().unwrap();
    let woken = || dataplane::io::poll::wait_fd(waker.as_raw_fd(), libc::POLLIN, 0).unwrap();

    let a = nets.add(spec("a:100:10.20.0.0/16")).unwrap();
    assert_eq!((a.name.as_str(), a.vni.get(), a.tap_mtu), ("a", 100, 1400));
    let queues = a.tap.as_ref().map_or(0, |t| t.queues().len());
    assert_eq!(
        (queues, a.tx.len(), a.rx.len()),
        (2, 2, 2),
        "one TAP queue and counter set per worker"
    );
    assert!(a.queue_of(0).is_some() && a.queue_of(1).is_some());
    assert!(link_exists("ovl100").unwrap() && link_exists("ovbr100").unwrap());
    assert!(woken(), "forwarding threads not woken after add");
    waker.drain();
    drop(a);
    // Collisions are refused before anything is created.
    for (bad, what) in [
        ("a:300", "two networks are named a"),
        ("c:100", "both use VNI 100"),
    ] {
        let e = nets.add(spec(bad)).unwrap_err().to_string();
        assert!(e.contains(what), "{bad}: {e}");
    }
    assert!(!link_exists("ovl300").unwrap());
    nets.add(spec("b:200")).unwrap();
    assert_eq!(table.len(), 2);
    let listed: Vec<String> = observe.networks().into_iter().map(|n| n.name).collect();
    assert_eq!(listed, ["a", "b"]);
    waker.drain();

    nets.remove("a").unwrap();
    assert!(woken(), "forwarding threads not woken after remove");
    assert!(table.by_name("a").is_none() && table.by_name("b").is_some());
    assert_eq!(observe.networks().len(), 1);
    // Its TAP and the bridge we created are gone (no forwarding thread holds the table's snapshot here).
    assert!(!link_exists("ovl100").unwrap() && !link_exists("ovbr100").unwrap());
    assert!(matches!(nets.remove("a"), Err(NetworksError::NotFound(_))));
    // It can come back.
    drop(nets.add(spec("a:100")).unwrap());
    assert!(link_exists("ovl100").unwrap());
    nets.shutdown();
    assert!(table.is_empty());
    for dev in ["ovl100", "ovbr100", "ovl200", "ovbr200"] {
        assert!(!link_exists(dev).unwrap(), "{dev} left after shutdown");
    }
}
