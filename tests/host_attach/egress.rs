//! Egress of attached namespaces: IPv4 masquerade through the host with the daemon's capabilities only,
//! dropped between networks, torn down cleanly; IPv6 attach (no DAD, default route) and `ip6` masquerade.

use super::{add_bridge, in_ns, ping, ping_within, single_host, spec, state_dir, with_daemon_caps, Ns};
use crate::testbed::{Netns as _, Testbed};
use overlayd::attach::Attachments;
use overlayd::egress::{self, Egress, EgressNet};
use std::net::{IpAddr, Ipv4Addr};

/// Egress, with the daemon's capabilities only: a namespace attached with the gateway reaches an address
/// outside the overlay (the testbed's
/// underlay namespace) through the host, masqueraded (the outside sees the host's address and has no route
/// back to the subnet); traffic between two overlay bridges is dropped; teardown removes the table and the
/// gateway address.
#[test]
fn egress_masquerades_and_tears_down() {
    let tb = single_host();
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
