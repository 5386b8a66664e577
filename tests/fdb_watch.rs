//! End-to-end proof of `overlayctl fdb --watch`: real overlayd processes in a three-host cluster.
//!
//! Owns: a MAC appearing behind one host and leaving (its daemon SIGKILLed) shows up in another host's stream
//! as `add` then `remove`, with the right VTEP and origin and the time of the change; the watcher caps over
//! HTTP: 6 on the TCP address (the 7th gets 503), 2 more on the admin socket whatever TCP holds. (A reader
//! that never reads a busy stream: `src/admin/tests.rs`, where the pipe is small enough to fill.)
//! Must never: assert on timings (functional deadlines only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_socket, form_cluster_at_once, ping_ok, OVERLAYCTL};
use common::testbed::{wait_until, Host, Netns, Testbed};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// The JSON lines of a `--json` watcher's log.
fn events(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn find<'a>(ev: &'a [Value], event: &str, mac: &str) -> Option<&'a Value> {
    ev.iter()
        .find(|e| e["event"] == event && e["mac"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(mac)))
}

#[test]
fn fdb_watch_streams_a_mac_appearing_and_leaving_and_the_watcher_caps_hold_per_listener() {
    let tb = Testbed::builder().hosts(3).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let mut daemons = form_cluster_at_once(&tb, &hosts, "w", &|_| Vec::new());
    let h1 = hosts[0];

    // A reader that asks for the stream and never reads a byte.
    let stalled = h1.spawn(
        "bash",
        &[
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/7947; printf 'GET /v1/fdb/watch HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3; head -c 12 <&3; exec sleep 600",
        ],
    );
    let json = h1.spawn(OVERLAYCTL, &["fdb", "--watch", "--json"]);
    let human = h1.spawn(OVERLAYCTL, &["fdb", "--watch"]);
    assert!(
        wait_until(Duration::from_secs(10), || events(&json.log())
            .iter()
            .any(|e| e["event"] == "synced")),
        "no baseline from `overlayctl fdb --watch --json`:\n{}",
        json.log()
    );
    // The TCP cap: 3 watchers so far, 3 more silent ones fill it, then the next gets 503.
    let silent: Vec<_> = (0..3)
        .map(|_| {
            h1.spawn(
                "bash",
                &[
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/7947; printf 'GET /v1/fdb/watch HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3; head -c 12 <&3; exec sleep 600",
                ],
            )
        })
        .collect();
    let seventh = "exec 3<>/dev/tcp/127.0.0.1/7947; printf 'GET /v1/fdb/watch HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3; head -c 12 <&3";
    // Once the 6 hold their places (each has its status line), the next one is refused.
    assert!(
        wait_until(Duration::from_secs(10), || silent
            .iter()
            .chain([&stalled])
            .all(|d| d.log().starts_with("HTTP/1.1 200"))
            && human.log().contains("table above")),
        "the TCP watchers did not all start:\n{}\n{}",
        silent
            .iter()
            .chain([&stalled])
            .map(|d| d.log())
            .collect::<Vec<_>>()
            .join("\n"),
        human.log()
    );
    let refused = h1.exec("bash", &["-c", seventh]);
    assert!(
        refused.as_ref().is_ok_and(|o| o.starts_with("HTTP/1.1 503")),
        "a 7th TCP watcher was not refused: {refused:?}\n{:?}",
        h1.exec("ss", &["-tnp"])
    );
    // The admin socket has its own 2 places.
    let sock = h1.admin_socket();
    let sock = sock.to_string_lossy();
    let root = h1.spawn(OVERLAYCTL, &["--admin-socket", &sock, "fdb", "--watch", "--json"]);
    assert!(
        wait_until(Duration::from_secs(10), || events(&root.log())
            .iter()
            .any(|e| e["event"] == "synced")),
        "the admin socket's watcher was refused while TCP was full:\n{}",
        root.log()
    );
    assert!(ctl_socket(h1, &["fdb"]).is_ok());
    drop(root);
    drop(silent);

    let bad = h1.exec(OVERLAYCTL, &["fdb", "--watch", "--network", "nope"]);
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("no network named nope")),
        "{bad:?}"
    );

    // A new MAC behind host 3's bridge (a macvlan in its container, sending a few broadcast pings).
    let mac = "02:00:00:ee:00:03";
    let before = unix_us();
    let script = format!(
        "ip link add link eth0 name nm0 address {mac} type macvlan mode bridge && \
         ip addr add 10.2.0.3/16 dev nm0 && ip link set nm0 up && \
         exec ping -b -n -q -c 5 -i 0.2 -I nm0 10.2.255.255"
    );
    let _emitter = hosts[2].container().spawn("sh", &["-c", &script]);
    let vtep3 = hosts[2].underlay_ip().to_string();
    // Its broadcast pings may reach host 1 before the control plane's advert (flooded, then `learned`): the
    // entry is added either way, and ends up installed by the control plane (`control`, host 3's VTEP).
    let control = |ev: &[Value]| {
        ev.iter()
            .find(|e| {
                (e["event"] == "add" || e["event"] == "update")
                    && e["origin"] == "control"
                    && e["mac"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(mac))
            })
            .cloned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || control(&events(&json.log()))
            .is_some()),
        "host 3's new MAC never showed up as a control entry in host 1's stream:\n{}",
        json.log()
    );
    let ev = events(&json.log());
    assert!(find(&ev, "add", mac).is_some(), "{ev:?}");
    let add = control(&ev).unwrap();
    assert_eq!(add["vtep"], vtep3.as_str(), "{add}");
    assert_eq!(add["network"], "default", "{add}");
    let ts = add["ts_us"].as_u64().unwrap();
    assert!(
        ts >= before && ts <= unix_us(),
        "the event carries the time of the change: {add}"
    );

    // Forwarding is unaffected by the stalled reader.
    ping_ok(hosts[0].container(), hosts[1].container().ip(), 3);

    // The MAC leaves: host 3's daemon is SIGKILLed, the members withdraw its MACs.
    daemons[2].kill();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let ev = events(&json.log());
            find(&ev, "remove", mac).is_some()
        }),
        "host 3's new MAC never showed up as `remove` in host 1's stream:\n{}",
        json.log()
    );
    let ev = events(&json.log());
    let seqs: Vec<u64> = ev
        .iter()
        .filter_map(|e| (e["event"] != "present").then(|| e["seq"].as_u64()).flatten())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events in order: {seqs:?}");
    assert!(
        !ev.iter().any(|e| e["event"] == "lost"),
        "a reader that keeps up loses nothing"
    );
    // The human form shows the same.
    assert!(
        wait_until(Duration::from_secs(5), || human
            .log()
            .lines()
            .any(|l| l.contains("remove") && l.contains(mac))),
        "human watcher:\n{}",
        human.log()
    );
    ping_ok(hosts[0].container(), hosts[1].container().ip(), 3);
    drop(stalled);
}
