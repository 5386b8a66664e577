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

use common::overlay::{
    alive_count, ctl_json, ctl_socket, fdb_row, non_member_drops, peer_row, ping_ok, start_overlayd,
    state_dir, str_field, OVERLAYCTL,
};
use common::testbed::{wait_until, Daemon, Host, Netns, Testbed};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The bound for enforcing a revocation everywhere.
const REVOKE_BOUND: Duration = Duration::from_secs(3);

/// [`common::overlay::form_cluster`] (host 1 `--init-cluster`, the admitter; the others join through it),
/// then every container pings every other.
fn form_cluster(tb: &Testbed, hosts: &[&Host]) -> Vec<Daemon> {
    let daemons = common::overlay::form_cluster(tb, hosts, "a", &|_| Vec::new());
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
    assert!(ctl_socket(hosts[1], &["revoke", &rip.to_string()]).is_err());
    // Revoking is privileged: without the admin socket overlayctl refuses and names it.
    let e = hosts[1]
        .exec(OVERLAYCTL, &["revoke", &id])
        .expect_err("revoke over TCP must fail");
    assert!(e.stderr.contains("--admin-socket"), "{e}");
    let t0 = Instant::now();
    let out = ctl_socket(hosts[1], &["revoke", &id]).unwrap_or_else(|e| panic!("{e}"));
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
    // (the garbage set: a quarter of it is long enough and carries VNI 1, so it reaches the membership
    // check; the bound leaves room for socket-buffer loss).
    for h in others {
        let got = revoked
            .container()
            .ping(h.container().ip(), 1)
            .map_or(0, |p| p.received);
        assert_eq!(got, 0, "revoked host 4 still reaches host {}", h.index());
        let before = non_member_drops(h);
        common::garbage::send_from(revoked, h.underlay_ip(), 4789, 1);
        let grew = wait_until(Duration::from_secs(5), || {
            non_member_drops(h) >= before + common::garbage::GARBAGE_COUNT / 10
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
    let _again = start_overlayd(
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
    daemons[2] = start_overlayd(
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
        others.iter().all(|h| alive_count(&ctl_json(h, "peers")) == 3)
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

// ---------------------------------------------------------------------------------------------------------
// Rogue member
// ---------------------------------------------------------------------------------------------------------

/// A MAC the harness advertises honestly as the rogue node (positive control: proves its messages are
/// delivered and processed, so the forgeries' lack of effect is not a lack of delivery).
const CONTROL_MAC: &str = "02:aa:00:00:00:01";
/// A MAC the harness tries to attach to the victim.
const FORGED_MAC: &str = "02:ee:00:00:00:01";

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct RogueConfig {
    /// The rogue host's state dir (its real member credential) and its running generation.
    rogue_state: String,
    rogue_ip: Ipv4Addr,
    rogue_generation: u64,
    /// The victim's state dir (only its public attestation is read) and its id/generation/ip/MAC.
    victim_state: String,
    victim_id: String,
    victim_ip: Ipv4Addr,
    victim_generation: u64,
    victim_mac: String,
    /// (id, ip, generation) of every node the harness talks to.
    targets: Vec<(String, Ipv4Addr, u64)>,
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let m: control::MacAddr = s.parse().unwrap();
    m.0
}

/// The harness body: run inside the rogue host's namespace by [`rogue_member_forgeries_change_nothing`].
/// Does nothing in a normal run (no `OVT_ROGUE_CONFIG`).
#[test]
fn rogue_harness() {
    let Ok(path) = std::env::var("OVT_ROGUE_CONFIG") else {
        return;
    };
    use control::messages::{self, Broadcast, FdbAdvert, FdbEntry, LeaveNotice, OwnerDump, SyncMessage};
    use control::sim::{swim_packet, Member, Message};
    use control::{NodeId, NodeIdentity};
    use std::net::{IpAddr, SocketAddr};

    let cfg: RogueConfig = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cred = control::auth::StateDir::new(&cfg.rogue_state)
        .load_credential()
        .unwrap();
    let key = cred.signer().unwrap();
    let port = control::DEFAULT_GOSSIP_PORT;
    let rogue_ip = IpAddr::from(cfg.rogue_ip);
    let me = NodeIdentity::signed(
        SocketAddr::new(rogue_ip, port),
        rogue_ip,
        cfg.rogue_generation,
        cred.attestation.clone(),
        &key,
    )
    .unwrap();
    let victim_att: control::attest::Attestation =
        postcard::from_bytes(&std::fs::read(format!("{}/node.attest", cfg.victim_state)).unwrap()).unwrap();
    let victim_id: NodeId = cfg.victim_id.parse().unwrap();
    let (vip, vgen) = (IpAddr::from(cfg.victim_ip), cfg.victim_generation);
    let vaddr = SocketAddr::new(vip, port);
    // Identities: the victim's attestation with another generation or VTEP (signed by the rogue's key:
    // it has no other), and the rogue's own attestation claiming the victim's VTEP or address.
    let forged_gen = NodeIdentity::signed(vaddr, vip, vgen + 1000, victim_att.clone(), &key).unwrap();
    let forged_vtep = NodeIdentity::signed(vaddr, rogue_ip, vgen, victim_att.clone(), &key).unwrap();
    let steal_vtep = NodeIdentity::signed(
        me.addr,
        vip,
        cfg.rogue_generation + 1,
        cred.attestation.clone(),
        &key,
    )
    .unwrap();
    let steal_addr = NodeIdentity::signed(vaddr, rogue_ip, u64::MAX, cred.attestation.clone(), &key).unwrap();
    let vm = mac_bytes(&cfg.victim_mac);
    let sign = |owner: NodeId, generation: u64, mac: [u8; 6], seq: u64, mobility: u64, present: bool| {
        FdbEntry::sign(&key, owner, generation, (1, mac), vec![], seq, mobility, present)
    };
    let adverts = [
        // Withdraw the victim's MAC / add one to the victim: signed by the wrong key.
        (victim_id, vgen, sign(victim_id, vgen, vm, 1000, 1000, false)),
        (
            victim_id,
            vgen,
            sign(victim_id, vgen, mac_bytes(FORGED_MAC), 1000, 1, true),
        ),
        // The rogue's own claims on the victim's MAC, far ahead (u64::MAX): refused, nothing wraps.
        (
            me.id,
            me.generation,
            sign(me.id, me.generation, vm, u64::MAX, 1, true),
        ),
        (
            me.id,
            me.generation,
            sign(me.id, me.generation, vm, 500, u64::MAX, true),
        ),
    ];
    let leave = LeaveNotice {
        identity: forged_gen.clone(),
        sig: LeaveNotice::sign(&me, &key).unwrap().sig,
    };
    let mut victim_leave = leave.clone();
    victim_leave.identity.generation = vgen;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = control::transport::gossip_client_config(&cred).unwrap();
        let ep = quinn::Endpoint::client(SocketAddr::new(rogue_ip, 0)).unwrap();
        for (id, ip, generation) in &cfg.targets {
            let ip = IpAddr::from(*ip);
            let dst = NodeIdentity {
                id: id.parse().unwrap(),
                addr: SocketAddr::new(ip, port),
                vtep: ip,
                generation: *generation,
                renewal: 0,
                proof: None,
            };
            let mut msgs: Vec<Vec<u8>> = Vec::new();
            for bad in [&forged_gen, &forged_vtep, &steal_vtep, &steal_addr] {
                msgs.push(swim_packet(bad, &dst, Message::Ping(7), &[], &[]));
                msgs.push(swim_packet(
                    &me,
                    &dst,
                    Message::Gossip,
                    &[Member::alive(bad.clone())],
                    &[],
                ));
                msgs.push(swim_packet(
                    &me,
                    &dst,
                    Message::Gossip,
                    &[Member::down(bad.clone())],
                    &[],
                ));
            }
            for (owner, generation, e) in &adverts {
                let b = Broadcast::Fdb(FdbAdvert {
                    owner: *owner,
                    generation: *generation,
                    entry: e.clone(),
                });
                msgs.push(swim_packet(&me, &dst, Message::Gossip, &[], &[b]));
            }
            msgs.push(swim_packet(
                &me,
                &dst,
                Message::Gossip,
                &[],
                &[Broadcast::Leave(victim_leave.clone())],
            ));
            for m in [
                SyncMessage::Leave {
                    notice: victim_leave.clone(),
                },
                SyncMessage::States {
                    owners: vec![OwnerDump {
                        owner: victim_id,
                        generation: vgen,
                        entries: vec![sign(victim_id, vgen, vm, 2000, 2000, false)],
                    }],
                },
            ] {
                msgs.push(messages::encode_sync(&m).unwrap());
            }
            // Positive control last: an honest advert of the rogue's own.
            let honest = Broadcast::Fdb(FdbAdvert {
                owner: me.id,
                generation: me.generation,
                entry: sign(me.id, me.generation, mac_bytes(CONTROL_MAC), 1000, 1, true),
            });
            msgs.push(swim_packet(&me, &dst, Message::Gossip, &[], &[honest]));

            let conn = ep
                .connect_with(client.clone(), SocketAddr::new(ip, port), "overlayd")
                .unwrap()
                .await
                .unwrap_or_else(|e| panic!("connect to {ip}: {e}"));
            for m in &msgs {
                let mut s = conn.open_uni().await.unwrap();
                s.write_all(m).await.unwrap();
                s.finish().unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.stopped()).await;
            }
            println!("rogue: sent {} messages to {ip}", msgs.len());
            conn.close(0u32.into(), b"done");
        }
        ep.wait_idle().await;
    });
    println!("rogue harness done");
}

#[test]
fn rogue_member_forgeries_change_nothing() {
    let tb = Testbed::builder().hosts(4).build();
    let hosts: Vec<&Host> = tb.hosts().iter().collect();
    let _daemons = form_cluster(&tb, &hosts);
    let (targets, victim, rogue) = (&hosts[..3], hosts[1], hosts[3]);
    let row = |h: &Host| own_row(h);
    let gen_of = |h: &Host| row(h).get("generation").and_then(Value::as_u64).unwrap();
    let id_of = |h: &Host| str_field(&row(h), "id").to_string();
    let vmac = victim.container().mac().to_string();
    let cfg = RogueConfig {
        rogue_state: state_dir(&tb, rogue, "a"),
        rogue_ip: rogue.underlay_ip(),
        rogue_generation: gen_of(rogue),
        victim_state: state_dir(&tb, victim, "a"),
        victim_id: id_of(victim),
        victim_ip: victim.underlay_ip(),
        victim_generation: gen_of(victim),
        victim_mac: vmac.clone(),
        targets: targets
            .iter()
            .map(|h| (id_of(h), h.underlay_ip(), gen_of(h)))
            .collect(),
    };
    let snapshot = |h: &Host| {
        let peers = ctl_json(h, "peers");
        let v = peer_row(&peers, victim.underlay_ip()).cloned();
        let f = fdb_row(&ctl_json(h, "fdb"), &vmac).cloned();
        (
            v.map(|r| {
                (
                    str_field(&r, "id").to_string(),
                    str_field(&r, "vtep").to_string(),
                    r["generation"].clone(),
                    str_field(&r, "state").to_string(),
                )
            }),
            f.map(|r| str_field(&r, "vtep").to_string()),
        )
    };
    let before: Vec<_> = targets.iter().map(|h| snapshot(h)).collect();
    let path = tb.log_dir().join("rogue.json");
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = rogue.run(
        "env",
        &[
            &format!("OVT_ROGUE_CONFIG={}", path.display()),
            &exe.to_string_lossy(),
            "--exact",
            "rogue_harness",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    eprintln!("{out}");
    assert!(out.contains("rogue harness done"), "harness output:\n{out}");

    // The honest advert arrives everywhere (so the harness's messages were processed) ...
    let delivered = wait_until(Duration::from_secs(10), || {
        targets.iter().all(|h| {
            fdb_row(&ctl_json(h, "fdb"), CONTROL_MAC)
                .is_some_and(|r| str_field(r, "vtep") == rogue.underlay_ip().to_string())
        })
    });
    assert!(
        delivered,
        "the harness's honest advert did not arrive: {:?}",
        targets.iter().map(|h| ctl_json(h, "fdb")).collect::<Vec<_>>()
    );
    // ... and the forgeries changed nothing: the victim's generation, VTEP, state and MAC, no forged MAC.
    std::thread::sleep(Duration::from_secs(3));
    for (h, b) in targets.iter().zip(&before) {
        let now = snapshot(h);
        eprintln!("host {}: victim before {b:?} after {now:?}", h.index());
        assert_eq!(&now, b, "host {}: the victim changed", h.index());
        assert!(
            b.0.as_ref().is_some_and(|r| r.3 == "alive")
                && b.1.as_deref() == Some(&victim.underlay_ip().to_string()[..])
        );
        assert!(
            fdb_row(&ctl_json(h, "fdb"), FORGED_MAC).is_none(),
            "host {}: forged MAC installed",
            h.index()
        );
        // Refused and counted (`overlayctl stats`: control.*).
        let st = ctl_json(h, "stats");
        let c = |k: &str| st["control"][k].as_u64().unwrap_or(0);
        eprintln!(
            "host {}: control.identities_refused {} bad_signatures {} seq_refused {}",
            h.index(),
            c("identities_refused"),
            c("bad_signatures"),
            c("seq_refused")
        );
        assert!(
            c("identities_refused") > 0 && c("bad_signatures") > 0 && c("seq_refused") > 0,
            "host {}: forgeries not counted: {}",
            h.index(),
            st["control"]
        );
        let alive = alive_count(&ctl_json(h, "peers"));
        assert_eq!(alive, 4, "host {}: {}", h.index(), ctl_json(h, "peers"));
    }
    // And traffic between the containers is unaffected.
    ping_ok(hosts[0].container(), victim.container().ip(), 2);
    ping_ok(hosts[2].container(), victim.container().ip(), 2);
}
