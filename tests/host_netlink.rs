//! `overlayd::host::netlink` (bridges, TAP MTU/master/up, addresses, the underlay link of an address) and
//! `overlayd::host::bridge_fdb` (a bridge's MACs) against the real kernel, each in a fresh network namespace.
//!
//! The daemon crate has no `unsafe`, so a test does not `unshare` itself: it re-executes this test binary
//! under `unshare -n` (util-linux), running only its `#[ignore]`d `*_inner` twin, which brings `lo` up and
//! does the work. `OVERLAYD_HOST_NETLINK_INNER` marks the inner run, so an inner test run by hand (outside a
//! fresh namespace) refuses instead of changing the host's links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use dataplane::io::{Tap, TapConfig};
use dataplane::wire::MacAddr;
use overlayd::host::bridge_fdb::{bridge_macs, BridgeMac};
use overlayd::host::netlink::*;

const INNER: &str = "OVERLAYD_HOST_NETLINK_INNER";

/// Run the ignored test `inner` of this binary in a new network namespace (`unshare -n`), `prefix` (e.g.
/// `setpriv` dropping a capability) between `unshare` and the binary. Panics with its output if it fails.
fn run_in_netns(inner: &str, prefix: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .args(prefix)
        .arg(&exe)
        .args(["--exact", inner, "--ignored", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .unwrap_or_else(|e| panic!("these tests need `unshare` (apt-get install util-linux): {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{inner} failed in its namespace:\n{text}");
    assert!(text.contains("1 passed"), "{inner} did not run:\n{text}");
}

/// Start of every inner test: refuse outside the fresh namespace `run_in_netns` made.
fn inner_guard() {
    assert_eq!(
        std::env::var(INNER).as_deref(),
        Ok("1"),
        "helper: run by its outer test inside a fresh network namespace, not by hand"
    );
}

/// `ip ARGS` (iproute2) in this process's namespace.
fn ip(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs `{cmd}` (apt-get install iproute2): {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

/// Inner-test set-up: the guard, then `lo` up.
fn inner_setup() {
    inner_guard();
    ip("ip", &["link", "set", "lo", "up"]);
}

fn tap(name: &str) -> Tap {
    Tap::create(&TapConfig {
        name: name.into(),
        vnet_hdr: false,
        queues: 1,
    })
    .unwrap()
}

#[test]
fn bridge_port_master_mtu_up_addr_delete() {
    run_in_netns("bridge_port_master_mtu_up_addr_delete_inner", &[]);
}

#[test]
#[ignore = "helper: run by bridge_port_master_mtu_up_addr_delete in a fresh network namespace"]
fn bridge_port_master_mtu_up_addr_delete_inner() {
    inner_setup();
    assert!(!link_exists("ovlbr0").unwrap());
    assert!(ensure_bridge("ovlbr0").unwrap(), "first call creates");
    assert!(!ensure_bridge("ovlbr0").unwrap(), "second call finds it");
    assert!(link_exists("ovlbr0").unwrap());
    assert!(link_is_up("ovlbr0").unwrap());

    // No `dummy` module on every kernel (not on this 6.18 test VM): use a TAP as the port.
    let _tap = tap("ovld0");
    assert!(!link_is_up("ovld0").unwrap());
    set_mtu("ovld0", 1450).unwrap();
    assert_eq!(link_mtu("ovld0").unwrap(), 1450);
    set_master("ovld0", "ovlbr0").unwrap();
    assert_eq!(link_master("ovld0").unwrap().as_deref(), Some("ovlbr0"));
    set_up("ovld0").unwrap();
    assert!(link_is_up("ovld0").unwrap());

    // A non-bridge with the bridge's name is reported, not silently used.
    match ensure_bridge("ovld0") {
        Err(NetlinkError::NotABridge { kind, .. }) => assert_eq!(kind, "tun"),
        other => panic!("expected NotABridge, got {other:?}"),
    }

    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    assert_eq!(interface_with_addr(v4).unwrap(), None);
    add_address("ovld0", v4, 24).unwrap();
    add_address("ovld0", v4, 24).unwrap(); // idempotent
    assert_eq!(interface_with_addr(v4).unwrap(), Some(("ovld0".to_owned(), 1450)));
    let v6 = IpAddr::V6("2001:db8::7".parse::<Ipv6Addr>().unwrap());
    add_address("ovlbr0", v6, 64).unwrap();
    let (name, _) = interface_with_addr(v6).unwrap().unwrap();
    assert_eq!(name, "ovlbr0");
    assert_eq!(
        interface_with_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap(),
        Some(("lo".to_owned(), 65536))
    );

    // The longest name the kernel takes (IFNAMSIZ - 1 = 15 bytes) works end to end: a NUL written twice
    // made the kernel refuse it with ERANGE.
    let longest = "ovlbr0123456789";
    assert_eq!(longest.len(), 15);
    assert!(ensure_bridge(longest).unwrap());
    assert!(link_is_up(longest).unwrap());
    assert_eq!(link_master("ovld0").unwrap().as_deref(), Some("ovlbr0"));
    set_master("ovld0", longest).unwrap();
    assert_eq!(link_master("ovld0").unwrap().as_deref(), Some(longest));
    delete_link(longest).unwrap();
    assert!(!link_exists(longest).unwrap());

    delete_link("ovld0").unwrap();
    assert!(!link_exists("ovld0").unwrap());
    delete_link("ovlbr0").unwrap();
    assert!(!link_exists("ovlbr0").unwrap());
}

/// The inner run has CAP_NET_ADMIN dropped (bounding and inheritable sets, so the exec'd binary lacks it).
#[test]
fn permission_error_says_what_to_do() {
    run_in_netns(
        "permission_error_says_what_to_do_inner",
        &[
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            "--",
        ],
    );
}

#[test]
#[ignore = "helper: run by permission_error_says_what_to_do in a fresh network namespace"]
fn permission_error_says_what_to_do_inner() {
    inner_guard(); // no `lo` up: that needs the capability this test runs without
    let e = ensure_bridge("ovlbr0").unwrap_err();
    assert!(matches!(e, NetlinkError::Permission { .. }), "{e:?}");
    assert!(e.to_string().contains("grant CAP_NET_ADMIN"), "{e}");
    let e = set_mtu("lo", 1500).unwrap_err();
    assert!(matches!(e, NetlinkError::Permission { .. }), "{e:?}");
    // Reading needs no privilege.
    assert!(link_exists("lo").unwrap());
}

#[test]
fn errors_name_the_problem() {
    run_in_netns("errors_name_the_problem_inner", &[]);
}

#[test]
#[ignore = "helper: run by errors_name_the_problem in a fresh network namespace"]
fn errors_name_the_problem_inner() {
    inner_setup();
    let e = set_mtu("nosuch0", 1400).unwrap_err();
    assert!(matches!(e, NetlinkError::NoSuchDevice { .. }), "{e:?}");
    assert!(e.to_string().contains("no such network device nosuch0"), "{e}");
    let e = ensure_bridge("a-very-long-bridge-name").unwrap_err();
    assert!(matches!(e, NetlinkError::NameTooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("at most 15 bytes"), "{e}");
    assert!(matches!(
        delete_link("nosuch0"),
        Err(NetlinkError::NoSuchDevice { .. })
    ));
    assert!(matches!(
        link_mtu("nosuch0"),
        Err(NetlinkError::NoSuchDevice { .. })
    ));
    add_link("ovlbr1", "bridge").unwrap();
    let e = add_link("ovlbr1", "bridge").unwrap_err();
    assert!(matches!(e, NetlinkError::Exists { .. }), "{e:?}");
    let e = add_link("x0", "nosuchkind").unwrap_err();
    assert!(matches!(e, NetlinkError::UnsupportedKind { .. }), "{e:?}");
    assert!(e.to_string().contains("modprobe nosuchkind"), "{e}");
    // MTU out of range is the kernel's EINVAL, reported with context.
    let _tap = tap("ovld1");
    let e = set_mtu("ovld1", 10).unwrap_err();
    assert!(e.to_string().contains("set mtu ovld1"), "{e}");
}

/// Bridge `br0` with veth ports `d1` and `d2` (`d2` stands for the TAP, excluded).
#[test]
fn lists_the_bridge_macs_except_the_excluded_port() {
    run_in_netns("lists_the_bridge_macs_except_the_excluded_port_inner", &[]);
}

#[test]
#[ignore = "helper: run by lists_the_bridge_macs_except_the_excluded_port in a fresh network namespace"]
fn lists_the_bridge_macs_except_the_excluded_port_inner() {
    inner_setup();
    ensure_bridge("br0").unwrap();
    for d in ["d1", "d2"] {
        let peer = format!("{d}p");
        ip("ip", &["link", "add", d, "type", "veth", "peer", "name", &peer]);
        set_master(d, "br0").unwrap();
        set_up(d).unwrap();
    }
    ip(
        "bridge",
        &["fdb", "add", "02:00:00:00:00:aa", "dev", "d1", "master", "static"],
    );
    ip(
        "bridge",
        &["fdb", "add", "02:00:00:00:00:bb", "dev", "d2", "master", "static"],
    );
    let a = bridge_macs("br0", "d2").unwrap();
    let b = bridge_macs("br0", "d1").unwrap();
    let aa = MacAddr([2, 0, 0, 0, 0, 0xaa]);
    let bb = MacAddr([2, 0, 0, 0, 0, 0xbb]);
    let find = |v: &[BridgeMac], m| v.iter().find(|x| x.mac == m).copied();
    assert_eq!(
        find(&a, aa),
        Some(BridgeMac {
            mac: aa,
            permanent: false
        }),
        "{a:?}"
    );
    assert_eq!(find(&a, bb), None, "entry on the excluded port: {a:?}");
    assert_eq!(
        find(&b, bb),
        Some(BridgeMac {
            mac: bb,
            permanent: false
        }),
        "{b:?}"
    );
    assert_eq!(find(&b, aa), None, "{b:?}");
    // Apart from the configured entries: the bridge's own address (in both) and each port's own
    // (permanent) address, which is listed only while its port is not the excluded one.
    let own = |v: &[BridgeMac]| {
        v.iter()
            .filter(|x| x.mac != aa && x.mac != bb)
            .copied()
            .collect::<Vec<_>>()
    };
    let (oa, ob) = (own(&a), own(&b));
    assert!(
        oa.iter().all(|x| x.permanent) && ob.iter().all(|x| x.permanent),
        "{a:?} {b:?}"
    );
    let only_a: Vec<_> = oa.iter().filter(|x| !ob.contains(x)).collect();
    let only_b: Vec<_> = ob.iter().filter(|x| !oa.contains(x)).collect();
    assert_eq!(
        (only_a.len(), only_b.len()),
        (1, 1),
        "d1's address vs d2's: {a:?} {b:?}"
    );
    assert!(matches!(
        bridge_macs("nosuchbr", "d2"),
        Err(NetlinkError::NoSuchDevice { .. })
    ));
}
