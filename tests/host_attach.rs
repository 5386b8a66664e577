//! Container attach and egress (issue 10 §3, §6) against real namespaces: `overlayd::attach`,
//! `overlayd::host` and `overlayd::egress` as a library, run on a thread inside a testbed host namespace
//! (the daemon's namespace in production), attaching other namespaces created here.
//!
//! Each test builds its own `Testbed` (unique names; everything deleted on drop, also on panic) with one
//! host and no container; the "containers" are extra namespaces named after the testbed id, deleted by
//! their own guards. Traffic only flows between namespaces created here.

#[path = "common/testbed.rs"]
mod testbed;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use overlayd::attach::{AttachError, AttachSpec, Attachment, Attachments};
use overlayd::egress::{self, Egress, EgressNet};
use overlayd::host::{HostError, NetnsRef};
use overlayd::privileges;
use rustix::thread::{move_into_link_name_space, CapabilitySet, LinkNameSpaceType};
use testbed::{run_cmd, wait_until, Netns as _, Testbed};

/// An extra namespace (a "container"), deleted on drop with everything running in it.
struct Ns {
    name: String,
    log_dir: PathBuf,
}

impl Ns {
    fn new(tb: &Testbed, tag: &str) -> Ns {
        let name = format!("ovt{}{tag}", tb.id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]))
            .unwrap_or_else(|e| panic!("apt-get install iproute2: {e}"));
        let ns = Ns {
            name,
            log_dir: tb.log_dir().to_owned(),
        };
        ns.run("ip", &["link", "set", "lo", "up"]);
        ns
    }
    fn netns_ref(&self) -> NetnsRef {
        NetnsRef::Name(self.name.clone())
    }
    fn delete(&self) {
        if let Ok(p) = run_cmd(Command::new("ip").args(["netns", "pids", &self.name])) {
            for pid in p.split_whitespace() {
                let _ = run_cmd(Command::new("kill").args(["-KILL", pid]));
            }
        }
        let _ = run_cmd(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

impl testbed::Netns for Ns {
    fn ns(&self) -> &str {
        &self.name
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A process alone in a fresh network namespace (`unshare -n sleep`), killed on drop.
struct Proc(Child);

impl Proc {
    fn new() -> Proc {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare (apt-get install util-linux): {e}"));
        let p = Proc(child);
        let pid = p.pid();
        let me = std::fs::read_link("/proc/self/ns/net").ok();
        assert!(
            wait_until(Duration::from_secs(5), || {
                std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != me
            }),
            "unshare -n did not enter a new namespace"
        );
        p
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    /// `nsenter --net=/proc/PID/ns/net cmd args`.
    fn exec(&self, cmd: &str, args: &[&str]) -> String {
        run_cmd(
            Command::new("nsenter")
                .arg(format!("--net=/proc/{}/ns/net", self.pid()))
                .arg(cmd)
                .args(args),
        )
        .unwrap_or_else(|e| panic!("(nsenter: apt-get install util-linux) {e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `f` on a thread inside namespace `ns` (as the daemon runs in its own), propagating panics.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open the host namespace {ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::os::fd::AsFd;
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("setns: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Run `f` on a new thread (in the caller's namespace) with only the capabilities the daemon keeps, as
/// after its start-up drop. Commands run from the caller's thread keep theirs (ping needs CAP_NET_RAW).
fn with_daemon_caps<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            privileges::drop_all_but(privileges::needed(&[4789, 7948]))
                .unwrap_or_else(|e| panic!("drop capabilities: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn state_dir(tb: &Testbed, tag: &str) -> PathBuf {
    let d = tb.log_dir().join(format!("state-{tag}"));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    d
}

fn add_bridge(h: &impl testbed::Netns, name: &str) {
    h.run("ip", &["link", "add", name, "type", "bridge", "stp_state", "0"]);
    h.run("ip", &["link", "set", name, "up"]);
}

fn spec(netns: NetnsRef, ip: &str, ifname: &str) -> AttachSpec {
    AttachSpec {
        netns,
        network: "blue".into(),
        bridge: "ovbr10".into(),
        mtu: 1400,
        ip: Some(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"))),
        mac: None,
        ifname: ifname.into(),
        gateway: None,
    }
}

/// `ip -d link show` of the host end: exists, is up, MTU and master.
fn host_end(h: &impl testbed::Netns, a: &Attachment) -> Option<String> {
    h.exec("ip", &["-o", "-d", "link", "show", "dev", &a.host_ifname])
        .ok()
}

fn ovv_links(h: &impl testbed::Netns) -> Vec<String> {
    h.run("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("ovv"))
        .collect()
}

fn bridge_ports(h: &impl testbed::Netns, br: &str) -> String {
    h.run("ip", &["-o", "link", "show", "master", br])
}

fn ping(from: &impl testbed::Netns, to: &str) -> bool {
    from.exec("ping", &["-n", "-q", "-c", "1", "-W", "1", to]).is_ok()
}

fn ping_within(from: &impl testbed::Netns, to: &str) -> bool {
    wait_until(Duration::from_secs(5), || ping(from, to))
}

/// Attach by `ip netns` name and by PID: address, MTU, MAC, bridge port; ping between the two; detach
/// leaves nothing behind and is idempotent, also once the namespace is gone.
#[test]
fn attach_by_name_and_pid_then_detach() {
    let tb = Testbed::builder().hosts(1).containers(false).build();
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
    let tb = Testbed::builder().hosts(1).containers(false).build();
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
    let tb = Testbed::builder().hosts(1).containers(false).build();
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

/// Egress, with the daemon's capabilities only: a namespace attached with the gateway reaches an address
/// outside the overlay (the testbed's
/// underlay namespace) through the host, masqueraded (the outside sees the host's address and has no route
/// back to the subnet); traffic between two overlay bridges is dropped; teardown removes the table and the
/// gateway address.
#[test]
fn egress_masquerades_and_tears_down() {
    let tb = Testbed::builder().hosts(1).containers(false).build();
    let h = tb.host(1);
    let outside = tb.underlay();
    outside.run("ip", &["addr", "add", "10.0.0.254/24", "dev", "br0"]);
    // Count what reaches the outside, by source.
    let counters = "table inet t { chain in { type filter hook input priority 0; policy accept; \
                    ip saddr 10.0.0.1 icmp type echo-request counter; \
                    ip saddr 10.20.0.0/16 counter; ip saddr 10.30.0.0/16 counter; }; }";
    outside
        .exec("nft", &[counters])
        .unwrap_or_else(|e| panic!("(apt-get install nftables) {e}"));
    add_bridge(h, "ovbr10");
    add_bridge(h, "ovbr20");
    let c = Ns::new(&tb, "e1");
    let d = Ns::new(&tb, "e2");
    let dir = state_dir(&tb, "egress");
    let blue = EgressNet {
        name: "blue".into(),
        bridge: "ovbr10".into(),
        subnet: "10.20.0.0/16".parse().expect("subnet"),
    };
    let red = EgressNet {
        name: "red".into(),
        bridge: "ovbr20".into(),
        subnet: "10.30.0.0/16".parse().expect("subnet"),
    };
    in_ns(h.ns(), || {
        let mut eg = Egress::new();
        let ifaces = vec!["ovbr10".to_owned(), "ovbr20".to_owned()];
        with_daemon_caps(|| eg.apply(&[blue.clone(), red.clone()], &ifaces)).expect("egress");
        assert!(
            egress::table_exists().expect("nft"),
            "table inet overlayd missing"
        );
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("sysctl");
        assert_eq!(fwd.trim(), "1");
        let addr = h.run("ip", &["-o", "addr", "show", "dev", "ovbr10"]);
        assert!(
            addr.contains("inet 10.20.0.1/16"),
            "gateway not on the bridge: {addr}"
        );

        let at = Attachments::open(&dir).expect("open");
        let gw = egress::gateway_ip(blue.subnet);
        assert_eq!(gw, Some(IpAddr::V4(Ipv4Addr::new(10, 20, 0, 1))));
        let mut sc = spec(c.netns_ref(), "10.20.0.2/16", "eth0");
        sc.gateway = gw;
        at.attach(sc).expect("attach c");
        let mut sd = spec(d.netns_ref(), "10.30.0.2/16", "eth0");
        sd.network = "red".into();
        sd.bridge = "ovbr20".into();
        sd.gateway = egress::gateway_ip(red.subnet);
        at.attach(sd).expect("attach d");
        let route = c.run("ip", &["route", "show", "default"]);
        assert!(route.contains("via 10.20.0.1 dev eth0"), "{route}");

        assert!(
            ping_within(&c, "10.0.0.254"),
            "container cannot reach the outside through its host"
        );
        assert!(ping_within(&d, "10.0.0.254"), "second network has no egress");
        let seen = outside.run("nft", &["list", "table", "inet", "t"]);
        println!("{seen}");
        assert!(
            seen.contains("ip saddr 10.0.0.1 icmp type echo-request counter packets")
                && !seen.contains("ip saddr 10.0.0.1 icmp type echo-request counter packets 0 "),
            "the outside did not see the host's address: {seen}"
        );
        assert!(
            seen.contains("ip saddr 10.20.0.0/16 counter packets 0 "),
            "not masqueraded: {seen}"
        );
        // Between networks: dropped in the host's forward chain.
        assert!(
            !ping(&c, "10.30.0.2") && !ping(&c, "10.30.0.2"),
            "traffic crossed networks"
        );

        with_daemon_caps(|| eg.teardown()).expect("teardown");
        assert!(!egress::table_exists().expect("nft"), "table left after teardown");
        let addr = h.run("ip", &["-o", "addr", "show", "dev", "ovbr10"]);
        assert!(!addr.contains("10.20.0.1"), "gateway left on the bridge: {addr}");
        assert!(!ping(&c, "10.0.0.254"), "egress still works after teardown");
        eg.teardown().expect("teardown is idempotent");
        at.detach(&c.netns_ref(), "blue", "eth0").expect("detach");
        at.detach(&d.netns_ref(), "red", "eth0").expect("detach");
    });
}

/// IPv6: addresses usable at once (no DAD), default route via the gateway, ping between two attached
/// namespaces; egress with the gateway on the bridge (`nodad`) and `ip6` masquerade to the other testbed host.
#[test]
fn ipv6_attach_and_egress() {
    let tb = Testbed::builder()
        .hosts(2)
        .containers(false)
        .ipv6_underlay(true)
        .build();
    let (h, outside) = (tb.host(1), tb.host(2));
    add_bridge(h, "ovbr30");
    // The testbed keeps IPv6 off on new host links; the egress bridge needs it for its gateway address.
    h.run(
        "sh",
        &["-c", "echo 0 > /proc/sys/net/ipv6/conf/ovbr30/disable_ipv6"],
    );
    outside
        .exec(
            "nft",
            &[
                "table inet t { chain in { type filter hook input priority 0; policy accept; \
               ip6 saddr fd00::1 icmpv6 type echo-request counter; \
               ip6 saddr fd00:30::/64 counter; }; }",
            ],
        )
        .unwrap_or_else(|e| panic!("(apt-get install nftables) {e}"));
    let c1 = Ns::new(&tb, "v1");
    let c2 = Ns::new(&tb, "v2");
    let dir = state_dir(&tb, "v6");
    let net = EgressNet {
        name: "six".into(),
        bridge: "ovbr30".into(),
        subnet: "fd00:30::/64".parse().expect("subnet"),
    };
    in_ns(h.ns(), || {
        let at = Attachments::open(&dir).expect("open");
        let gw = egress::gateway_ip(net.subnet);
        assert_eq!(gw, Some("fd00:30::1".parse().expect("ip")));
        for (c, ip) in [(&c1, "fd00:30::2/64"), (&c2, "fd00:30::3/64")] {
            let mut s = spec(c.netns_ref(), ip, "eth0");
            s.network = "six".into();
            s.bridge = "ovbr30".into();
            s.gateway = gw;
            at.attach(s).expect("attach v6");
        }
        let addr = c1.run(
            "ip",
            &["-o", "-6", "addr", "show", "dev", "eth0", "scope", "global"],
        );
        assert!(
            addr.contains("inet6 fd00:30::2/64") && !addr.contains("tentative"),
            "{addr}"
        );
        let route = c1.run("ip", &["-6", "route", "show", "default"]);
        assert!(route.contains("via fd00:30::1 dev eth0"), "{route}");
        assert!(
            ping_within(&c1, "fd00:30::3"),
            "no IPv6 ping between attached namespaces"
        );

        let mut eg = Egress::new();
        eg.apply(std::slice::from_ref(&net), &["ovbr30".to_owned()])
            .expect("egress v6");
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").expect("sysctl");
        assert_eq!(fwd.trim(), "1");
        let br = h.run(
            "ip",
            &["-o", "-6", "addr", "show", "dev", "ovbr30", "scope", "global"],
        );
        assert!(
            br.contains("inet6 fd00:30::1/64") && !br.contains("tentative"),
            "{br}"
        );
        assert!(ping_within(&c1, "fd00::2"), "no IPv6 egress to the other host");
        let seen = outside.run("nft", &["list", "table", "inet", "t"]);
        println!("{seen}");
        assert!(
            !seen.contains("ip6 saddr fd00::1 icmpv6 type echo-request counter packets 0 "),
            "the outside did not see the host's address: {seen}"
        );
        assert!(
            seen.contains("ip6 saddr fd00:30::/64 counter packets 0 "),
            "not masqueraded: {seen}"
        );
        eg.teardown().expect("teardown");
        assert!(!egress::table_exists().expect("nft"));
        let br = h.run("ip", &["-o", "-6", "addr", "show", "dev", "ovbr30"]);
        assert!(!br.contains("fd00:30::1"), "{br}");
        assert!(at.detach(&c1.netns_ref(), "six", "eth0").expect("detach"));
        assert!(at.detach(&c2.netns_ref(), "six", "eth0").expect("detach"));
    });
}

/// Without `--ip`: addresses come from this host's blocks, skipping the network address and the gateway;
/// a full block says so; an explicit address in use is refused; a detached address is handed out again.
#[test]
fn allocating_attach_uses_the_blocks() {
    let tb = Testbed::builder().hosts(1).containers(false).build();
    let h = tb.host(1);
    add_bridge(h, "ovbr10");
    let cs: Vec<Ns> = (1..=4).map(|i| Ns::new(&tb, &format!("f{i}"))).collect();
    let dir = state_dir(&tb, "alloc");
    let subnet: ipnet::IpNet = "10.20.0.0/16".parse().expect("subnet");
    let blocks: Vec<ipnet::IpNet> = vec!["10.20.0.0/30".parse().expect("block")];
    in_ns(h.ns(), || {
        let at = Attachments::open(&dir).expect("open");
        let any = |c: &Ns| spec(c.netns_ref(), "10.20.9.9/16", "eth0");
        let a0 = at.attach_allocating(any(&cs[0]), subnet, &blocks).expect("first");
        let a1 = at
            .attach_allocating(any(&cs[1]), subnet, &blocks)
            .expect("second");
        assert_eq!(a0.ip, Some("10.20.0.2/16".parse().expect("ip")));
        assert_eq!(a1.ip, Some("10.20.0.3/16".parse().expect("ip")));
        let e = at
            .attach_allocating(any(&cs[2]), subnet, &blocks)
            .expect_err("block full");
        assert!(
            matches!(e, AttachError::Ipam(overlayd::ipam::IpamError::BlockFull { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("request another block"), "{e}");
        assert!(
            !cs[2].link_exists("eth0"),
            "nothing wired when no address is free"
        );
        let more = vec![blocks[0], "10.20.0.64/26".parse().expect("block")];
        let a2 = at
            .attach_allocating(any(&cs[2]), subnet, &more)
            .expect("next block");
        assert_eq!(a2.ip, Some("10.20.0.64/16".parse().expect("ip")));
        let e = at
            .attach(spec(cs[3].netns_ref(), "10.20.0.3/16", "eth0"))
            .expect_err("in use");
        assert!(matches!(e, AttachError::AddressInUse { .. }), "{e:?}");
        assert!(at.detach(&cs[1].netns_ref(), "blue", "eth0").expect("detach"));
        let a3 = at.attach_allocating(any(&cs[3]), subnet, &blocks).expect("reuse");
        assert_eq!(a3.ip, Some("10.20.0.3/16".parse().expect("ip")));
        assert!(ping_within(&cs[3], "10.20.0.2"));
        // A container that dies without a detach frees its address once the block runs full.
        cs[0].delete();
        let a4 = at
            .attach_allocating(any(&cs[1]), subnet, &blocks)
            .expect("reuse a dead one's");
        assert_eq!(a4.ip, Some("10.20.0.2/16".parse().expect("ip")));
        assert_eq!(at.list().len(), 3, "{:?}", at.list());
        for c in [&cs[1], &cs[2], &cs[3]] {
            assert!(at.detach(&c.netns_ref(), "blue", "eth0").expect("detach"));
        }
        assert!(at.list().is_empty());
    });
}
