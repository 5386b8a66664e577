//! End-to-end proof of cluster mode (gossip control plane): real overlayd processes in network namespaces.
//!
//! Owns: forming a cluster through one member with a join token, checking that every container reaches every
//! other, that the FDBs are filled by the control plane, that a SIGKILLed node is withdrawn within the issue's
//! 3 s bound, and that nodes without a valid token never become members nor inject traffic.
//! Must never: assert on timings other than the explicit 3 s withdrawal bound (everything else is a
//! functional "within N s"), or use the default state dir /var/lib/overlayd (every daemon gets its own under
//! the testbed's log dir, deleted with the testbed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::overlay::{
    ctl_json, ctl_socket, fdb_row, form_cluster_at_once, non_member_drops, peer_row, ping_ok, spawn_overlayd,
    start_overlayd, state_dir, str_field,
};

use common::testbed::{wait_until, Host, Netns, Testbed};
use std::time::{Duration, Instant};

/// The bound for withdrawing a SIGKILLed node's MACs from every other node.
const WITHDRAW_BOUND: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// `overlayctl --admin-socket … token` on the first member (one line, trimmed).
fn token(host: &Host) -> String {
    let t = ctl_socket(host, &["token"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();
    assert!(t.starts_with("OVL1-"), "unexpected token format: {t:?}");
    t
}

// ---------------------------------------------------------------------------------------------------------
// a. five hosts joined through one member
// ---------------------------------------------------------------------------------------------------------

#[test]
fn five_hosts_join_through_one_member() {
    let tb = Testbed::builder().hosts(5).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let mut daemons = form_cluster_at_once(&tb, &hosts, "a", &|_| Vec::new());

    // Every container pings every other: all 20 ordered pairs. This also makes every container's MAC seen
    // behind its own bridge, which is what the control plane advertises.
    for a in &hosts {
        for b in &hosts {
            if a.index() != b.index() {
                ping_ok(a.container(), b.container().ip(), 2);
            }
        }
    }

    // Every node's FDB holds every other container's MAC, from the control plane, behind the right VTEP.
    let complete = |h: &Host| {
        let fdb = ctl_json(h, "fdb");
        hosts.iter().filter(|o| o.index() != h.index()).all(|o| {
            fdb_row(&fdb, o.container().mac()).is_some_and(|r| {
                str_field(r, "origin") == "control" && str_field(r, "vtep") == o.underlay_ip().to_string()
            })
        })
    };
    if !wait_until(Duration::from_secs(10), || hosts.iter().all(|h| complete(h))) {
        for h in &hosts {
            eprintln!("fdb on host {}: {}", h.index(), ctl_json(h, "fdb"));
        }
        panic!("not every node has every other container's MAC with origin control and the right vtep");
    }

    // SIGKILL host 5's daemon: its container's MAC must leave the four other FDBs within 3 s.
    let victim = hosts[4];
    let mac5 = victim.container().mac().to_string();
    let ip5 = victim.underlay_ip();
    let killed_at = Instant::now();
    daemons[4].kill(); // SIGKILL + reap
    let others = &hosts[..4];
    let mut gone_at: Vec<Option<Duration>> = vec![None; others.len()];
    let deadline = killed_at + WITHDRAW_BOUND + Duration::from_secs(2);
    while gone_at.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, h) in others.iter().enumerate() {
            if gone_at[i].is_none() && fdb_row(&ctl_json(h, "fdb"), &mac5).is_none() {
                gone_at[i] = Some(killed_at.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (h, t) in others.iter().zip(&gone_at) {
        eprintln!("host {}: host 5's MAC withdrawn after {t:?}", h.index());
    }
    let worst = gone_at.iter().map(|t| t.unwrap_or(Duration::MAX)).max().unwrap();
    eprintln!("withdrawal of host 5 (SIGKILL) from all 4 others: {worst:?}");
    for (h, t) in others.iter().zip(&gone_at) {
        assert!(
            t.is_some_and(|t| t <= WITHDRAW_BOUND),
            "host {}: host 5's MAC {mac5} not withdrawn within {WITHDRAW_BOUND:?} (at {t:?}); fdb: {}",
            h.index(),
            ctl_json(h, "fdb")
        );
    }
    // And the others see host 5 as dead (or have forgotten it) — the FDB withdrawal follows from that.
    let dead_everywhere = wait_until(Duration::from_secs(3), || {
        others.iter().all(|h| {
            let peers = ctl_json(h, "peers");
            peer_row(&peers, ip5).map_or(true, |r| str_field(r, "state") == "dead")
        })
    });
    assert!(
        dead_everywhere,
        "host 5 not dead/absent in peers: {:?}",
        others.iter().map(|h| ctl_json(h, "peers")).collect::<Vec<_>>()
    );
    // The survivors still reach each other.
    ping_ok(hosts[0].container(), hosts[3].container().ip(), 2);

    // A clean stop (SIGTERM) announces a leave: the other three mark host 4 `left` (or forget it) and drop its
    // MAC. Functional timeout only; the time is printed.
    let leaver = hosts[3];
    let (mac4, ip4) = (leaver.container().mac().to_string(), leaver.underlay_ip());
    let stopped_at = Instant::now();
    daemons[3].signal("TERM").unwrap();
    let rest = &hosts[..3];
    let left = wait_until(Duration::from_secs(10), || {
        rest.iter().all(|h| {
            let gone = fdb_row(&ctl_json(h, "fdb"), &mac4).is_none();
            let peers = ctl_json(h, "peers");
            gone && peer_row(&peers, ip4).map_or(true, |r| matches!(str_field(r, "state"), "left" | "dead"))
        })
    });
    eprintln!(
        "leave of host 4 (SIGTERM) seen by all 3 others after {:?}",
        stopped_at.elapsed()
    );
    assert!(
        left,
        "host 4 (SIGTERM) not withdrawn within 10 s: {:?}",
        rest.iter()
            .map(|h| (ctl_json(h, "peers"), ctl_json(h, "fdb")))
            .collect::<Vec<_>>()
    );
    let st = daemons[3].wait_timeout(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "overlayd on host 4 after SIGTERM: {st:?}\n{}",
        daemons[3].log()
    );
    let states: Vec<String> = rest
        .iter()
        .map(|h| {
            peer_row(&ctl_json(h, "peers"), ip4).map_or("absent".into(), |r| str_field(r, "state").into())
        })
        .collect();
    eprintln!("host 4 as seen by hosts 1-3 after its leave: {states:?}");
}

// ---------------------------------------------------------------------------------------------------------
// b. forged or absent token
// ---------------------------------------------------------------------------------------------------------

/// `OVL1-<fingerprint>-<secret>` with every hex digit of one part replaced by another digit.
fn forge(token: &str, part: usize) -> String {
    let mut parts: Vec<String> = token.split('-').map(str::to_string).collect();
    assert_eq!(parts.len(), 3, "token is not OVL1-<fp>-<secret>: {token}");
    parts[part] = parts[part]
        .chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => std::char::from_digit((d + 7) % 16, 16).unwrap(),
            None => c,
        })
        .collect();
    let forged = parts.join("-");
    assert_ne!(forged, token);
    forged
}

#[test]
fn forged_or_absent_token_is_refused() {
    let tb = Testbed::builder().hosts(4).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let (members, intruder) = (&hosts[..3], hosts[3]);
    let _daemons = form_cluster_at_once(&tb, members, "a", &|_| Vec::new());
    let real = token(members[0]);
    let seed = members[0].underlay_ip().to_string();
    let intruder_ip = intruder.underlay_ip();
    let intruder_mac = intruder.container().mac().to_string();

    let never_member = |what: &str| {
        for m in members {
            let peers = ctl_json(m, "peers");
            assert!(
                peer_row(&peers, intruder_ip).is_none(),
                "{what}: host 4 appears in host {}'s peers: {peers}",
                m.index()
            );
            let fdb = ctl_json(m, "fdb");
            assert!(
                fdb_row(&fdb, &intruder_mac).is_none(),
                "{what}: host 4's container MAC is in host {}'s fdb: {fdb}",
                m.index()
            );
        }
    };

    // (i) A forged token — wrong secret (the member must refuse) and wrong CA fingerprint (the joiner must
    // refuse the member) — makes overlayd exit non-zero, and it never becomes a member.
    for (part, what) in [(2, "forged secret"), (1, "forged CA fingerprint")] {
        let forged = forge(&real, part);
        let dir = state_dir(&tb, intruder, &format!("forged{part}"));
        let mut d = spawn_overlayd(
            intruder,
            &["--peer", &seed, "--token", &forged, "--state-dir", &dir],
        );
        // Meanwhile the intruder's container tries to talk to the members.
        let _ = intruder.container().ping(members[0].container().ip(), 1);
        let status = d.wait_timeout(Duration::from_secs(30));
        eprintln!("{what}: overlayd exited with {status:?}; log:\n{}", d.log());
        let status =
            status.unwrap_or_else(|| panic!("{what}: overlayd still running after 30 s:\n{}", d.log()));
        assert!(
            !status.success(),
            "{what}: overlayd exited successfully:\n{}",
            d.log()
        );
        never_member(what);
    }

    // (ii) No token, static mode, the members as --peer: it floods VXLAN to them, and they drop it.
    let drops_before: Vec<u64> = members.iter().map(|m| non_member_drops(m)).collect();
    let mut args: Vec<String> = Vec::new();
    for m in members {
        args.push("--peer".into());
        args.push(m.underlay_ip().to_string());
    }
    args.extend(["--local".into(), intruder_ip.to_string()]);
    args.extend(["--state-dir".into(), state_dir(&tb, intruder, "static")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = start_overlayd(intruder, &args);
    assert!(
        wait_until(Duration::from_secs(10), || intruder.link_exists("ovl1")),
        "no TAP ovl1 on host 4"
    );
    for m in members {
        let to = m.container().ip();
        let got = intruder.container().ping(to, 2).map_or(0, |p| p.received);
        assert_eq!(
            got, 0,
            "host 4's container (not a member) got ping replies from {to}"
        );
    }
    assert!(d.is_running(), "static overlayd on host 4 died:\n{}", d.log());
    never_member("static mode, no token");
    for (m, before) in members.iter().zip(drops_before) {
        let after = non_member_drops(m);
        eprintln!("host {}: drops.non_member {before} → {after}", m.index());
        assert!(
            after > before,
            "host {}: drops.non_member did not grow ({before} → {after})",
            m.index()
        );
    }
    // The members are unharmed.
    ping_ok(members[0].container(), members[2].container().ip(), 2);
}
