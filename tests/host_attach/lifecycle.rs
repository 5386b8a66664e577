//! An attachment's life: attach by name and by PID, detach (idempotent, also once the namespace is gone),
//! records that survive a restart and reconcile, and attach by PID with only the daemon's capabilities.

use super::{
    add_bridge, bridge_ports, host_end, in_ns, ovv_links, ping_within, single_host, spec, state_dir, Ns, Proc,
};
use crate::testbed::Netns as _;
use overlayd::attach::{AttachError, Attachments};
use overlayd::host::{HostError, NetnsRef};
use overlayd::privileges;
use rustix::thread::CapabilitySet;

/// Attach by `ip netns` name and by PID: address, MTU, MAC, bridge port; ping between the two; detach
/// leaves nothing behind and is idempotent, also once the namespace is gone.
#[test]
fn attach_by_name_and_pid_then_detach() {
    let tb = single_host();
    let h = tb.host(1);
    add_bridge(h, "ovbr10");
    let c1 = Ns::new(&tb, "a1");
    let p2 = Proc::new();
    let dir = state_dir(&tb, "names");
    in_ns(h.ns(), || {
        let at = Attachments::open(&dir).expect("open");
        let mut s1 = spec(c1.netns_ref(), "10.20.0.2/16", "eth0");
        s1.mac = Some("02:00:00:00:aa:01".parse().expect("mac"));
        let a1 = at.attach(s1.clone()).expect("attach by name");
        let a2 = at
            .attach(spec(NetnsRef::Pid(p2.pid()), "10.20.0.3/16", "net1"))
            .expect("attach by pid");
        assert_eq!(a1.mac.to_string(), "02:00:00:00:aa:01");
        assert!(a1.host_ifname.starts_with("ovv") && a1.host_ifname.len() <= 15);
        assert_ne!(a1.host_ifname, a2.host_ifname);

        // Inside: address with the subnet prefix, MTU, MAC, up.
        let link = c1.run("ip", &["-o", "link", "show", "dev", "eth0"]);
        assert!(
            link.contains("mtu 1400") && link.contains("02:00:00:00:aa:01"),
            "{link}"
        );
        assert!(link.contains(",UP"), "{link}");
        let addr = c1.run("ip", &["-o", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("inet 10.20.0.2/16"), "{addr}");
        let addr2 = p2.exec("ip", &["-o", "addr", "show", "dev", "net1"]);
        assert!(addr2.contains("inet 10.20.0.3/16"), "{addr2}");
        assert!(
            p2.exec("ip", &["-o", "link", "show", "lo"]).contains("UP"),
            "lo up"
        );
        // Host end: MTU, bridge port, up.
        for a in [&a1, &a2] {
            let l = host_end(h, a).expect("host end exists");
            assert!(
                l.contains("mtu 1400") && l.contains("master ovbr10") && l.contains(",UP"),
                "{l}"
            );
        }
        assert!(
            ping_within(&c1, "10.20.0.3"),
            "no ping between the two attached namespaces"
        );

        // Attaching the same again is refused, naming what to do.
        match at.attach(s1) {
            Err(e @ AttachError::AlreadyAttached { .. }) => {
                assert!(e.to_string().contains("detach it first"))
            }
            other => panic!("expected AlreadyAttached, got {other:?}"),
        }
        assert_eq!(at.list().len(), 2);
        assert_eq!(at.used_addresses("blue").len(), 2);

        assert!(at.detach(&c1.netns_ref(), "blue", "eth0").expect("detach"));
        assert!(host_end(h, &a1).is_none(), "veth left behind");
        assert!(
            c1.exec("ip", &["link", "show", "dev", "eth0"]).is_err(),
            "inner end left behind"
        );
        assert!(!bridge_ports(h, "ovbr10").contains(&a1.host_ifname));
        assert!(
            !at.detach(&c1.netns_ref(), "blue", "eth0").expect("second detach"),
            "nothing attached"
        );

        // The process exits: its namespace is gone; detach still succeeds (false) and cleans the record.
        drop(p2);
        assert!(!at
            .detach(
                &NetnsRef::Pid(a2.netns.to_string().parse().expect("pid")),
                "blue",
                "net1"
            )
            .expect("detach after the namespace is gone"));
        assert!(at.list().is_empty());
        assert!(ovv_links(h).is_empty(), "{:?}", ovv_links(h));
        assert_eq!(bridge_ports(h, "ovbr10").trim(), "");
        // Detaching something never attached to a namespace that never existed is fine too.
        assert!(!at
            .detach(&NetnsRef::Name(format!("{}-none", c1.name)), "blue", "eth0")
            .expect("detach of nothing"));
    });
}

/// A netns deleted while attached; persistence across a new `Attachments`; reconcile keeps the live one
/// (re-plugging it into a re-created bridge), drops the dead one and removes an orphan veth.
#[test]
fn persistence_and_reconcile() {
    let tb = single_host();
    let h = tb.host(1);
    add_bridge(h, "ovbr10");
    let c1 = Ns::new(&tb, "b1");
    let c2 = Ns::new(&tb, "b2");
    let dir = state_dir(&tb, "persist");
    in_ns(h.ns(), || {
        let at = Attachments::open(&dir).expect("open");
        let a1 = at
            .attach(spec(c1.netns_ref(), "10.20.0.2/16", "eth0"))
            .expect("attach c1");
        let a2 = at
            .attach(spec(c2.netns_ref(), "10.20.0.3/16", "eth0"))
            .expect("attach c2");
        drop(at); // the daemon exits, attachments stay

        c2.delete();
        h.run("ip", &["link", "del", "ovbr10"]);
        add_bridge(h, "ovbr10");
        h.run(
            "ip",
            &[
                "link",
                "add",
                "ovv0123456789ab",
                "type",
                "veth",
                "peer",
                "name",
                "ovvpeer0",
            ],
        );

        let at = Attachments::open(&dir).expect("reopen");
        assert_eq!(
            at.list(),
            vec![a1.clone(), a2.clone()],
            "records survive a restart"
        );
        let r = at.reconcile().expect("reconcile");
        assert_eq!(r.kept, vec![a1.clone()]);
        assert_eq!(r.dropped, vec![a2.clone()]);
        assert_eq!(r.orphans, vec!["ovv0123456789ab".to_owned()]);
        assert_eq!(at.list(), vec![a1.clone()]);
        let l = host_end(h, &a1).expect("kept veth exists");
        assert!(
            l.contains("master ovbr10"),
            "not re-plugged into the new bridge: {l}"
        );
        assert!(!h.link_exists("ovv0123456789ab"), "orphan not removed");
        // What reconcile decided is persisted.
        assert_eq!(Attachments::open(&dir).expect("reopen").list(), vec![a1.clone()]);
        // c2 is gone: detach succeeds with false.
        assert!(!at.detach(&c2.netns_ref(), "blue", "eth0").expect("detach gone"));
        assert!(at.detach(&c1.netns_ref(), "blue", "eth0").expect("detach c1"));
        assert!(ovv_links(h).is_empty());
    });
}

/// With the capabilities the daemon keeps (`privileges::needed`), attach by PID works; without
/// CAP_SYS_PTRACE the kernel refuses to open /proc/PID/ns/net of a process with more capabilities, and the
/// error says what to grant.
#[test]
fn attach_by_pid_after_the_capability_drop() {
    let tb = single_host();
    let h = tb.host(1);
    add_bridge(h, "ovbr10");
    let p = Proc::new();
    let c = Ns::new(&tb, "d1");
    let dir = state_dir(&tb, "caps");
    in_ns(h.ns(), || {
        // This thread (and the ones it starts) only; capabilities are per thread.
        let kept = privileges::drop_all_but(privileges::needed(&[4789, 7948])).expect("drop");
        assert!(!kept.contains(CapabilitySet::DAC_OVERRIDE) && kept.contains(CapabilitySet::SYS_ADMIN));
        let at = Attachments::open(&dir).expect("open");
        let a = at
            .attach(spec(NetnsRef::Pid(p.pid()), "10.20.0.2/16", "eth0"))
            .expect("attach by pid after the drop");
        at.attach(spec(c.netns_ref(), "10.20.0.3/16", "eth0"))
            .expect("attach by name after the drop");
        assert!(p
            .exec("ip", &["-o", "addr", "show", "dev", "eth0"])
            .contains("10.20.0.2/16"));
        assert!(at.detach(&a.netns, "blue", "eth0").expect("detach"));
        assert!(at.detach(&c.netns_ref(), "blue", "eth0").expect("detach"));
    });
    in_ns(h.ns(), || {
        privileges::drop_all_but(CapabilitySet::NET_ADMIN | CapabilitySet::SYS_ADMIN).expect("drop");
        let at = Attachments::open(&dir).expect("open");
        let e = at
            .attach(spec(NetnsRef::Pid(p.pid()), "10.20.0.2/16", "eth0"))
            .expect_err("needs CAP_SYS_PTRACE");
        assert!(
            matches!(e, AttachError::Host(HostError::NetnsPermission { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("CAP_SYS_PTRACE"), "{e}");
    });
}
