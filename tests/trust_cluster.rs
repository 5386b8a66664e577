//! End-to-end proof of bound identities and revocation (issue 8 §4, §5) with real overlayd processes in
//! network namespaces.
//!
//! - A rogue member (a harness in this file, run inside the rogue host's namespace, speaking the gossip
//!   protocol over QUIC with the real credential from that host's state dir) forges another node's
//!   generation, VTEP, adverts (including seq = u64::MAX), leave and table dump: nothing changes on the
//!   other nodes.
//! - `overlayctl revoke` on a member that is not an admitter: the revoked node disappears from every
//!   `peers` within 3 s, its MACs are withdrawn, its VXLAN datagrams are dropped as `non_member`, and
//!   restarting it with its old state dir does not bring it back.
//!
//! Must never: assert timings other than the 3 s revocation bound, or touch the default state dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{ctl_json, ping_ok, OVERLAYCTL, OVERLAYD};
use common::testbed::{wait_until, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The bound for enforcing a revocation everywhere.
const REVOKE_BOUND: Duration = Duration::from_secs(3);

fn state_dir(tb: &Testbed, host: &Host, tag: &str) -> String {
    let d: PathBuf = tb.log_dir().join(format!("state-h{}-{tag}", host.index()));
    d.to_string_lossy().into_owned()
}

fn start(host: &Host, args: &[&str]) -> Daemon {
    let mut d = host.spawn(OVERLAYD, args);
    let ready = wait_until(Duration::from_secs(20), || {
        !d.is_running() || host.exec(OVERLAYCTL, &["stats", "--json"]).is_ok()
    });
    if let Some(st) = d.try_wait() {
        panic!("`{}` exited during startup ({st}):\n{}", d.cmdline(), d.log());
    }
    assert!(ready, "`{}` not ready within 20 s:\n{}", d.cmdline(), d.log());
    d
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn str_field<'a>(row: &'a Value, k: &str) -> &'a str {
    row.get(k).and_then(Value::as_str).unwrap_or("")
}

fn peer_row(peers: &Value, ip: Ipv4Addr) -> Option<&Value> {
    let prefix = format!("{ip}:");
    rows(peers)
        .iter()
        .find(|r| str_field(r, "addr").starts_with(&prefix))
}

fn fdb_row<'a>(fdb: &'a Value, mac: &str) -> Option<&'a Value> {
    rows(fdb)
        .iter()
        .find(|r| str_field(r, "mac").eq_ignore_ascii_case(mac))
}

fn non_member_drops(host: &Host) -> u64 {
    let v = ctl_json(host, "stats");
    v.get("drops")
        .and_then(|d| d.get("non_member"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Host 1 `--init-cluster` (the admitter), the others join through it; waits until all see all alive.
fn form_cluster(tb: &Testbed, hosts: &[&Host]) -> Vec<Daemon> {
    let h1 = hosts[0];
    let d1 = start(
        h1,
        &[
            "--init-cluster",
            "--local",
            &h1.underlay_ip().to_string(),
            "--state-dir",
            &state_dir(tb, h1, "a"),
        ],
    );
    let tok = h1.run(OVERLAYCTL, &["token"]).trim().to_string();
    let seed = h1.underlay_ip().to_string();
    let mut daemons = vec![d1];
    for h in &hosts[1..] {
        let mut d = h.spawn(
            OVERLAYD,
            &[
                "--peer",
                &seed,
                "--token",
                &tok,
                "--state-dir",
                &state_dir(tb, h, "a"),
            ],
        );
        let ready = wait_until(Duration::from_secs(20), || {
            !d.is_running() || h.exec(OVERLAYCTL, &["stats", "--json"]).is_ok()
        });
        if let Some(st) = d.try_wait() {
            panic!(
                "`{}` exited during join ({st}):\n{}\nadmitter log:\n{}",
                d.cmdline(),
                d.log(),
                daemons[0].log()
            );
        }
        assert!(ready, "`{}` not ready within 20 s:\n{}", d.cmdline(), d.log());
        daemons.push(d);
    }
    let n = hosts.len();
    let formed = wait_until(Duration::from_secs(20), || {
        hosts.iter().all(|h| {
            rows(&ctl_json(h, "peers"))
                .iter()
                .filter(|r| str_field(r, "state") == "alive")
                .count()
                == n
        })
    });
    assert!(
        formed,
        "the {n} nodes did not all see {n} alive members within 20 s"
    );
    // Every container's MAC shows up behind its bridge, hence in every FDB.
    for a in hosts {
        for b in hosts {
            if a.index() != b.index() {
                ping_ok(a.container(), b.container().ip(), 1);
            }
        }
    }
    daemons
}

/// The `peers --json` row a host reports about itself.
fn own_row(host: &Host) -> Value {
    peer_row(&ctl_json(host, "peers"), host.underlay_ip())
        .cloned()
        .unwrap_or_else(|| panic!("host {} does not list itself", host.index()))
}

// ---------------------------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------------------------

#[test]
fn revoked_node_is_gone_everywhere_and_cannot_return() {
    let tb = Testbed::builder().hosts(4).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let mut daemons = form_cluster(&tb, &hosts);
    let (others, revoked) = (&hosts[..3], hosts[3]);
    let id = str_field(&own_row(revoked), "id").to_string();
    let rip = revoked.underlay_ip();
    let rmac = revoked.container().mac().to_string();
    for h in others {
        assert!(
            fdb_row(&ctl_json(h, "fdb"), &rmac).is_some(),
            "host {} lacks host 4's MAC",
            h.index()
        );
    }

    // Static-peer style ids are refused; the revoke runs on host 2, which is not an admitter.
    assert!(hosts[1].exec(OVERLAYCTL, &["revoke", &rip.to_string()]).is_err());
    let t0 = Instant::now();
    let out = hosts[1].run(OVERLAYCTL, &["revoke", &id]);
    eprintln!("overlayctl revoke {id} on host 2: {}", out.trim());
    assert!(out.contains("forwarded to admitter"), "{out}");
    let mut gone_at: Vec<Option<Duration>> = vec![None; others.len()];
    while gone_at.iter().any(Option::is_none) && t0.elapsed() < REVOKE_BOUND + Duration::from_secs(5) {
        for (i, h) in others.iter().enumerate() {
            if gone_at[i].is_none()
                && peer_row(&ctl_json(h, "peers"), rip).is_none()
                && fdb_row(&ctl_json(h, "fdb"), &rmac).is_none()
            {
                gone_at[i] = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (h, t) in others.iter().zip(&gone_at) {
        eprintln!("host {}: host 4 gone from peers and fdb after {t:?}", h.index());
        assert!(
            t.is_some_and(|t| t <= REVOKE_BOUND),
            "host {}: revoked host 4 still listed after {REVOKE_BOUND:?}: peers {} fdb {}",
            h.index(),
            ctl_json(h, "peers"),
            ctl_json(h, "fdb")
        );
    }

    // Its VXLAN datagrams are dropped as non_member: VXLAN for our VNI sent from its underlay address
    // (the garbage set: half of it carries VNI 1, which is checked against membership first).
    for h in others {
        let got = revoked
            .container()
            .ping(h.container().ip(), 1)
            .map_or(0, |p| p.received);
        assert_eq!(got, 0, "revoked host 4 still reaches host {}", h.index());
        let before = non_member_drops(h);
        common::garbage::send_from(revoked, h.underlay_ip(), 4789, 1);
        let grew = wait_until(Duration::from_secs(5), || {
            non_member_drops(h) >= before + common::garbage::GARBAGE_COUNT / 4
        });
        let after = non_member_drops(h);
        eprintln!("host {}: drops.non_member {before} → {after}", h.index());
        assert!(
            grew,
            "host {}: revoked node's datagrams not counted as non_member ({before} → {after})",
            h.index()
        );
    }

    // Restart with the old state dir (and the old --peer): it never becomes a member again.
    daemons[3].kill();
    let _again = start(
        revoked,
        &[
            "--peer",
            &hosts[0].underlay_ip().to_string(),
            "--state-dir",
            &state_dir(&tb, revoked, "a"),
        ],
    );
    // A member restarting keeps enforcing the list from its state dir.
    daemons[2].kill();
    daemons[2] = start(
        hosts[2],
        &[
            "--local",
            &hosts[2].underlay_ip().to_string(),
            "--state-dir",
            &state_dir(&tb, hosts[2], "a"),
        ],
    );
    let back = wait_until(Duration::from_secs(10), || {
        others
            .iter()
            .any(|h| peer_row(&ctl_json(h, "peers"), rip).is_some())
    });
    assert!(
        !back,
        "revoked host 4 is back: {:?}",
        others.iter().map(|h| ctl_json(h, "peers")).collect::<Vec<_>>()
    );
    let rejoined = wait_until(Duration::from_secs(20), || {
        others.iter().all(|h| {
            rows(&ctl_json(h, "peers"))
                .iter()
                .filter(|r| str_field(r, "state") == "alive")
                .count()
                == 3
        })
    });
    assert!(rejoined, "host 3 did not rejoin after its restart");
    for h in others {
        assert!(
            fdb_row(&ctl_json(h, "fdb"), &rmac).is_none(),
            "host {} re-learned host 4's MAC",
            h.index()
        );
        let got = revoked
            .container()
            .ping(h.container().ip(), 1)
            .map_or(0, |p| p.received);
        assert_eq!(got, 0, "restarted revoked host 4 reaches host {}", h.index());
    }
    ping_ok(hosts[0].container(), hosts[2].container().ip(), 2);
}

/// Re-executed inside a host namespace by `common::garbage::send_from`; does nothing in a normal run.
#[test]
fn garbage_sender() {
    common::garbage::sender_main()
}
