//! §2 bridge ownership: on SIGTERM overlayd removes a bridge it created only when nothing else is on it,
//! and never one it did not create.

use super::{log_count, master, start, start_pair, TAP};
use crate::common::overlay::ping_ok;
use crate::common::testbed::{BridgeMode, Netns, Testbed, BRIDGE};
use std::time::Duration;

/// A bridge overlayd created stays on SIGTERM while a container's veth is on it (and a restart finds it with
/// the veth still attached); a bridge it created with no other port is removed.
#[test]
fn sigterm_keeps_a_bridge_with_other_ports_and_removes_an_empty_one() {
    let tb = Testbed::builder().hosts(2).bridge(BridgeMode::Daemon).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (mut d1, mut d2) = start_pair(h1, h2);
    // Only host 1's container is plugged into the bridge overlayd created.
    h1.attach_container(Duration::from_secs(10));
    assert!(log_count(&d1, "created bridge") == 1 && log_count(&d2, "created bridge") == 1);

    for (d, h) in [(&mut d1, h1), (&mut d2, h2)] {
        d.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
        let st = d.wait_timeout(Duration::from_secs(5));
        let st = st.unwrap_or_else(|| panic!("host {}: still running 5 s after SIGTERM", h.index()));
        assert_eq!(st.code(), Some(0), "host {}: {st}\n{}", h.index(), d.log());
        assert!(!h.link_exists(TAP), "host {}: TAP left behind", h.index());
    }
    assert!(
        h1.link_exists(BRIDGE),
        "bridge with a container on it was removed:\n{}",
        d1.log()
    );
    assert_eq!(
        master(h1, "vc1").as_deref(),
        Some(BRIDGE),
        "veth no longer on the bridge"
    );
    assert_eq!(
        log_count(&d1, "leaving bridge we created in place"),
        1,
        "{}",
        d1.log()
    );
    assert!(
        !h2.link_exists(BRIDGE),
        "empty bridge overlayd created was left behind:\n{}",
        d2.log()
    );
    assert_eq!(log_count(&d2, "removed bridge we created"), 1, "{}", d2.log());

    // A restart plugs into the surviving bridge; the container is still on it and reachable again.
    let (mut d1, _d2) = start_pair(h1, h2);
    h2.attach_container(Duration::from_secs(10));
    assert_eq!(master(h1, "vc1").as_deref(), Some(BRIDGE));
    assert_eq!(master(h1, TAP).as_deref(), Some(BRIDGE));
    ping_ok(tb.container(1), tb.container(2).ip(), 3);
    // The state dir records that an overlayd created it: once the container is gone, this run removes it.
    assert_eq!(
        log_count(&d1, "found the bridge an earlier overlayd created"),
        1,
        "{}",
        d1.log()
    );
    h1.run("ip", &["link", "set", "vc1", "nomaster"]);
    d1.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d1.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        !h1.link_exists(BRIDGE),
        "empty bridge an earlier run created was left:\n{}",
        d1.log()
    );
    assert!(!h1.link_exists(TAP));
}

/// A bridge overlayd did not create is never removed, even with nothing else on it; nor is one that merely
/// has the name of a bridge an earlier run created (the record names the exact device).
#[test]
fn sigterm_never_removes_a_bridge_it_did_not_create() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    // The testbed made ovl0 (no ports).
    let mut d1 = start(h1, h2);
    d1.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d1.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        h1.link_exists(BRIDGE),
        "pre-existing bridge removed:\n{}",
        d1.log()
    );

    // Host 1 again, but overlayd creates the bridge, then is killed (the record stays); someone replaces
    // the bridge with their own of the same name; the next run must not adopt that one.
    h1.run("ip", &["link", "del", BRIDGE]);
    let mut d2 = start(h1, h2);
    assert_eq!(log_count(&d2, "created bridge"), 1, "{}", d2.log());
    d2.kill();
    h1.run("ip", &["link", "del", BRIDGE]);
    h1.run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
    let mut d3 = start(h1, h2);
    assert_eq!(
        log_count(&d3, "found the bridge an earlier overlayd created"),
        0,
        "{}",
        d3.log()
    );
    d3.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d3.wait_timeout(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        h1.link_exists(BRIDGE),
        "someone else's bridge removed:\n{}",
        d3.log()
    );
}
