//! §7 one daemon per state dir: a second overlayd on the same `--state-dir` is refused, and a crash frees it.

use super::{args, start, state_dir};
use crate::common::overlay::{spawn_overlayd, OVERLAYCTL};
use crate::common::testbed::{Netns, Testbed};
use std::time::Duration;

/// A second overlayd with the same --state-dir exits non-zero and names the first one's pid; the first keeps
/// running. After the first is gone (even by SIGKILL), the state dir is free again.
#[test]
fn second_daemon_on_the_same_state_dir_is_refused() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let mut d1 = start(h1, h2);
    let a = args(h1, h2);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut second = spawn_overlayd(h1, &a);
    let st = second.wait_timeout(Duration::from_secs(5));
    let st = st.unwrap_or_else(|| panic!("second daemon still running:\n{}", second.log()));
    let log = second.log();
    assert_eq!(st.code(), Some(1), "second daemon: {st}\n{log}");
    let pid = format!("pid {}", d1.pid());
    assert!(
        log.contains(&pid) && log.contains(&state_dir(h1)),
        "error must name {pid} and the dir:\n{log}"
    );
    assert!(d1.is_running(), "the first daemon died:\n{}", d1.log());
    h1.run(OVERLAYCTL, &["stats", "--json"]);
    let lock = std::fs::read_to_string(format!("{}/lock", state_dir(h1))).unwrap_or_default();
    assert_eq!(
        lock.trim(),
        d1.pid().to_string(),
        "lock file holds the owner's pid"
    );

    // The kernel releases the lock with the process, so a crash never blocks the next start.
    d1.kill();
    let d3 = start(h1, h2);
    let lock = std::fs::read_to_string(format!("{}/lock", state_dir(h1))).unwrap_or_default();
    assert_eq!(lock.trim(), d3.pid().to_string());
}
