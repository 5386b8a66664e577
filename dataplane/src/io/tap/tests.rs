//! TAP devices in a throw-away network namespace: frames both ways, offloads, reopen, multiqueue, removal on
//! drop, and the errors of bad names and missing capabilities.

use super::*;
use crate::io::poll::poll_fds;
use crate::io::testns::{self, in_netns};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
const OUR_IP: [u8; 4] = [10, 77, 0, 2];
const TAP_IP: [u8; 4] = [10, 77, 0, 1];

fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&OUR_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&TAP_IP);
    f
}

/// Read frames until an ARP reply for our request shows up (skipping IPv6 RS/MLD etc.).
fn wait_arp_reply(q: &TapQueue) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let mut fds = [libc::pollfd {
            fd: q.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if poll_fds(&mut fds, 200).unwrap() == 0 {
            continue;
        }
        let n = match q.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("read: {e}"),
        };
        let off = if q.vnet_hdr() { VNET_HDR_LEN } else { 0 };
        let f = &buf[off..n];
        if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0x00, 0x02] {
            return f.to_vec();
        }
    }
    panic!("no ARP reply within 5 s");
}

fn arp_roundtrip(vnet_hdr: bool) {
    in_netns(move || {
        let tap = Tap::create(&TapConfig {
            name: "ovltap0".into(),
            vnet_hdr,
            queues: 1,
        })
        .unwrap();
        assert_eq!(tap.name(), "ovltap0");
        let q = &tap.queues()[0];
        assert_eq!(q.vnet_hdr(), vnet_hdr);
        // Nothing queued yet: non-blocking read says so.
        let mut b = [0u8; 2048];
        assert_eq!(q.read(&mut b).unwrap_err().kind(), io::ErrorKind::WouldBlock);

        testns::add_address("ovltap0", IpAddr::V4(Ipv4Addr::from(TAP_IP)), 24);
        testns::set_up("ovltap0");
        let req = arp_request();
        if vnet_hdr {
            let hdr = [0u8; VNET_HDR_LEN];
            let n = q
                .write_vectored(&[IoSlice::new(&hdr), IoSlice::new(&req)])
                .unwrap();
            assert_eq!(n, VNET_HDR_LEN + req.len());
        } else {
            assert_eq!(q.write(&req).unwrap(), req.len());
        }
        let reply = wait_arp_reply(q);
        assert_eq!(&reply[0..6], &OUR_MAC, "reply addressed to our MAC");
        assert_eq!(&reply[28..32], &TAP_IP, "sender IP is the TAP's");
        assert_eq!(&reply[32..38], &OUR_MAC, "target MAC is ours");
        assert_eq!(&reply[38..42], &OUR_IP);
    });
}

#[test]
fn arp_reply_without_vnet_hdr() {
    arp_roundtrip(false);
}

#[test]
fn arp_reply_with_vnet_hdr() {
    arp_roundtrip(true);
}

#[test]
fn write_to_down_link_is_eio() {
    in_netns(|| {
        let tap = Tap::create(&TapConfig {
            name: "ovltap4".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap();
        let e = tap.queues()[0].write(&arp_request()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        testns::set_up("ovltap4");
        assert_eq!(tap.queues()[0].write(&arp_request()).unwrap(), 42);
    });
}

#[test]
fn offload_on_vnet_hdr_tap() {
    in_netns(|| {
        let tap = Tap::create(&TapConfig {
            name: "ovltap1".into(),
            vnet_hdr: true,
            queues: 1,
        })
        .unwrap();
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6).unwrap();
        // UDP segmentation offload (kernel >= 6.2), as a virtio device would declare it.
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6)
            .unwrap();
        tap.set_offload(0).unwrap();
        let plain = Tap::create(&TapConfig {
            name: "ovltap2".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap();
        assert!(matches!(
            plain.set_offload(TUN_F_CSUM),
            Err(TapError::OffloadNeedsVnetHdr { .. })
        ));
        // Unknown bits are rejected by the kernel.
        let e = tap.set_offload(TUN_F_CSUM | 0x8000).unwrap_err();
        assert!(
            matches!(e, TapError::OffloadRejected { flags: 0x8001, .. }),
            "{e:?}"
        );
    });
}

#[test]
fn reopen_after_delete_keeps_the_fd() {
    in_netns(|| {
        let tap = Tap::create(&TapConfig {
            name: "ovlre0".into(),
            vnet_hdr: true,
            queues: 1,
        })
        .unwrap();
        let q = &tap.queues()[0];
        let fd = q.as_raw_fd();
        let mut buf = [0u8; 2048];
        assert_eq!(q.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(tap.attached());
        testns::delete_link("ovlre0");
        assert!(!tap.attached());
        // A queue of a deleted TAP is dead: EBADFD on read, POLLERR on poll (the old busy-loop).
        assert_eq!(q.read(&mut buf).unwrap_err().raw_os_error(), Some(libc::EBADFD));
        tap.reopen().unwrap();
        assert_eq!(q.as_raw_fd(), fd, "same descriptor number");
        assert!(testns::link_exists("ovlre0"));
        assert!(tap.attached());
        assert_eq!(q.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4).unwrap();
        testns::set_up("ovlre0");
        assert_eq!(q.write(&[0u8; VNET_HDR_LEN + 42]).unwrap(), VNET_HDR_LEN + 42);
        // Reopening while the device still exists attaches to nothing new: it is busy (ours).
        assert!(
            matches!(tap.reopen(), Err(TapError::Busy { .. })),
            "reopen of a live TAP"
        );
        drop(tap);
        let deadline = Instant::now() + Duration::from_secs(2);
        while testns::link_exists("ovlre0") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!testns::link_exists("ovlre0"), "still not persistent");
    });
}

#[test]
fn multiqueue_and_removed_on_drop() {
    in_netns(|| {
        let tap = Tap::create(&TapConfig {
            name: "ovlmq0".into(),
            vnet_hdr: true,
            queues: 3,
        })
        .unwrap();
        assert_eq!(tap.queues().len(), 3);
        assert!(testns::link_exists("ovlmq0"));
        // A "%d" pattern is expanded by the kernel and reported back.
        let pat = Tap::create(&TapConfig {
            name: "ovlp%d".into(),
            vnet_hdr: false,
            queues: 2,
        })
        .unwrap();
        assert_eq!(pat.name(), "ovlp0");
        assert!(testns::link_exists("ovlp0"));
        let queues = tap.into_queues();
        assert_eq!(queues.len(), 3);
        drop(queues);
        let deadline = Instant::now() + Duration::from_secs(2);
        while testns::link_exists("ovlmq0") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!testns::link_exists("ovlmq0"), "TAP must not be persistent");
    });
}

#[test]
fn permission_error_says_what_to_do() {
    in_netns(|| {
        crate::io::testns::drop_caps(&[crate::io::testns::CAP_NET_ADMIN]);
        let e = Tap::create(&TapConfig {
            name: "ovltap42".into(),
            vnet_hdr: true,
            queues: 1,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::Permission { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot create TAP device ovltap42: permission denied (run as root or grant CAP_NET_ADMIN)"
        );
    });
}

#[test]
fn name_errors() {
    in_netns(|| {
        let e = Tap::create(&TapConfig {
            name: "ovl-name-too-long".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::NameTooLong { .. }), "{e:?}");
        assert!(e.to_string().contains("at most 15 bytes"), "{e}");
        let e = Tap::create(&TapConfig {
            name: "a/b".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::InvalidName { .. }), "{e:?}");
        let e = Tap::create(&TapConfig {
            name: "ovl0".into(),
            vnet_hdr: false,
            queues: 0,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::NoQueues { .. }), "{e:?}");
        testns::add_bridge("ovlbr9");
        let e = Tap::create(&TapConfig {
            name: "ovlbr9".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::Busy { .. }), "{e:?}");
        assert!(e.to_string().contains("ip link del ovlbr9"), "{e}");
        // A single-queue TAP in use cannot be opened a second time.
        let _t = Tap::create(&TapConfig {
            name: "ovltap3".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap();
        let e = Tap::create(&TapConfig {
            name: "ovltap3".into(),
            vnet_hdr: false,
            queues: 1,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::Busy { .. }), "{e:?}");
    });
}
