//! Real dockerd instances in testbed host namespaces (tests/common/docker.rs), the base of the Docker driver
//! end-to-end tests (issue 11). This one needs no overlayd: it proves that two dockerds run side by side, each
//! in its own host namespace with its own state, and run busybox containers from the imported image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::docker::{Dockerd, BUSYBOX_IMAGE};
use common::testbed::{Netns, Testbed};

/// The network namespace inode of a process or a named namespace (`stat -L -c %i`).
fn netns_inode(path: &str) -> String {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::os::unix::fs::MetadataExt::ino(&m).to_string()
}

#[test]
fn two_dockerds_in_two_host_namespaces_run_busybox() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    tb.cleanup_on_exit();
    // Declared after the testbed: dropped (containers removed, dockerd stopped) before its namespaces go.
    let d1 = Dockerd::start(tb.host(1));
    let d2 = Dockerd::start(tb.host(2));
    for (d, h) in [(&d1, tb.host(1)), (&d2, tb.host(2))] {
        assert_eq!(
            netns_inode(&format!("/proc/{}/ns/net", d.pid())),
            netns_inode(&format!("/run/netns/{}", h.ns())),
            "dockerd must run in the host namespace {}",
            h.ns()
        );
        d.import_busybox();
    }

    // A one-shot container: only loopback with --network none, and the applets work.
    let out = d1.must(&[
        "run",
        "--rm",
        "--network",
        "none",
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        "ip -o link; echo ok",
    ]);
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": ")).collect();
    assert_eq!(links.len(), 1, "only lo expected: {out}");
    assert!(links[0].contains("lo:"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");

    // Long-running containers on both hosts; each dockerd sees only its own.
    let c1 = d1.run_detached(&["--network", "none", BUSYBOX_IMAGE, "sleep", "600"]);
    let c2 = d2.run_detached(&["--network", "none", BUSYBOX_IMAGE, "sleep", "600"]);
    assert_eq!(d1.containers(), vec![c1.clone()]);
    assert_eq!(d2.containers(), vec![c2.clone()]);
    // The container has its own network namespace, not the host's.
    let pid = d1.container_pid(&c1);
    assert_ne!(
        netns_inode(&format!("/proc/{pid}/ns/net")),
        netns_inode(&format!("/run/netns/{}", tb.host(1).ns()))
    );
    assert_eq!(d1.exec(&c1, &["echo", "hi"]).unwrap().trim(), "hi");
    d1.rm(&c1);
    assert!(d1.containers().is_empty());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            // The pid may be reused; it must at least not be our container's sleep in that namespace any more.
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).map_or(true, |c| !c.starts_with("sleep"))
        }
    );
    assert_eq!(d2.containers(), vec![c2]);
}

#[test]
fn the_image_check_tells_static_from_dynamic_binaries() {
    use common::docker::is_static_elf;
    let sh = std::fs::read("/bin/sh").unwrap();
    assert!(!is_static_elf(&sh), "/bin/sh (dash) is dynamically linked");
    let bb = std::fs::read("/bin/busybox").expect("apt-get install -y busybox-static");
    assert!(is_static_elf(&bb), "/bin/busybox must come from busybox-static");
    assert!(!is_static_elf(b""));
    assert!(!is_static_elf(b"\x7fELF\x02\x01"));
}
