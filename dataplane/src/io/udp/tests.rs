//! UDP socket tests, each in its own network namespace.

use super::sys::getsockopt_int;
use super::*;
use crate::io::poll::wait_fd;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::io::testns::{self, in_netns};

fn lo4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn opts(gro: bool) -> UdpOptions {
    UdpOptions {
        reuse_port: false,
        buffer_bytes: 1 << 20,
        gro,
    }
}

/// Receive until `want` datagrams (after GRO splitting) arrived or 3 s passed.
fn recv_datagrams(sock: &UdpSocket, want: usize, batch: &mut RecvBatch) -> Vec<(SocketAddr, usize, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        if !wait_fd(sock.as_raw_fd(), libc::POLLIN, 100).unwrap() {
            continue;
        }
        let n = match sock.recv_batch(batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("recv_batch: {e}"),
        };
        assert_eq!(n, batch.len());
        for i in 0..n {
            let (meta, bytes) = batch.get(i);
            assert_eq!(bytes.len(), meta.len);
            for d in batch.datagrams(i) {
                out.push((meta.src, meta.stride, d.to_vec()));
            }
        }
    }
    out
}

#[test]
fn batch_send_to_self_with_shared_range() {
    in_netns(|| {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let rx1 = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let rx2 = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let (a1, a2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        let mut b = SendBatch::new(4096, 8);
        assert_eq!(
            (b.remaining(), b.msgs_free(), b.len(), b.is_empty()),
            (4096, 8, 0, true)
        );
        for (payload, dsts) in [
            (&b"one"[..], vec![a1]),
            (b"two-two", vec![a1]),
            (b"flood", vec![a1, a2]),
        ] {
            b.spare()[..payload.len()].copy_from_slice(payload);
            let r = b.commit(payload.len());
            assert_eq!(b.bytes(r.clone()), payload);
            for d in dsts {
                assert!(b.push(d, r.clone(), 0));
            }
        }
        assert_eq!(b.len(), 4);
        assert_eq!(b.msgs_free(), 4);
        assert!(!b.push(a1, 0..5000, 0), "uncommitted range is refused");
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (4, 0), "{:?}", rep.last_error);
        assert!(b.is_empty());
        assert_eq!(b.remaining(), 4096);

        let mut rb = RecvBatch::new(8, 2048);
        let got = recv_datagrams(&rx1, 3, &mut rb);
        let me = tx.local_addr().unwrap();
        let payloads: Vec<&[u8]> = got.iter().map(|(_, _, p)| &p[..]).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two-two", b"flood"]);
        assert!(got.iter().all(|(src, _, _)| *src == me));
        let got2 = recv_datagrams(&rx2, 1, &mut rb);
        assert_eq!(got2.len(), 1);
        assert_eq!(got2[0].2, b"flood");
        // Nothing else queued.
        assert_eq!(
            rx1.recv_batch(&mut rb).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    });
}

#[test]
fn sender_set_sends_each_message_from_its_socket_in_order() {
    in_netns(|| {
        let set = SenderSet::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 8, &opts(false)).unwrap();
        assert_eq!(set.len(), 8);
        assert!(set.gso_supported());
        let ports: Vec<u16> = set.ports().collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 8, "one port per socket: {ports:?}");
        // A fresh namespace has the default ephemeral range, which Linux vxlan also uses.
        assert!(ports.iter().all(|p| (32768..=60999).contains(p)), "{ports:?}");
        for s in set.sockets() {
            let df = getsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap();
            assert_eq!(df, libc::IP_PMTUDISC_DO, "DF on every send socket");
        }
        let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut b = SendBatch::new(4096, 64);
        // Interleave sockets 5, 2, 5, 7, 2, 5: each socket's messages must leave in push order.
        let plan = [5u16, 2, 5, 7, 2, 5];
        for (k, sock) in plan.iter().enumerate() {
            b.spare()[..2].copy_from_slice(&[*sock as u8, k as u8]);
            let r = b.commit(2);
            assert!(b.push_from(*sock, dst, r, 0));
        }
        b.spare()[0] = 0xee;
        let r = b.commit(1);
        assert!(
            b.push_from(8, dst, r, 0),
            "the batch does not know the set's size"
        );
        let rep = set.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (6, 1), "{:?}", rep.last_error);
        assert_eq!(
            rep.last_error.map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
        let mut rb = RecvBatch::new(16, 64);
        let got = recv_datagrams(&rx, 6, &mut rb);
        assert_eq!(got.len(), 6);
        for (src, _, d) in &got {
            assert_eq!(
                src.port(),
                ports[usize::from(d[0])],
                "message {d:?} left from its socket"
            );
        }
        for sock in [2u8, 5, 7] {
            let order: Vec<u8> = got.iter().filter(|g| g.2[0] == sock).map(|g| g.2[1]).collect();
            let want: Vec<u8> = (0..plan.len() as u8)
                .filter(|k| plan[*k as usize] == u16::from(sock))
                .collect();
            assert_eq!(order, want, "push order kept for socket {sock}");
        }
        // UdpSocket::send_batch ignores the index: everything leaves from that one socket.
        b.spare()[..2].copy_from_slice(b"zz");
        let r = b.commit(2);
        assert!(b.push_from(3, dst, r, 0));
        let one = &set.sockets()[0];
        assert_eq!(one.send_batch(&mut b).sent, 1);
        let got = recv_datagrams(&rx, 1, &mut rb);
        assert_eq!(got[0].0.port(), ports[0]);
    });
}

#[test]
fn msg_table_full() {
    let mut b = SendBatch::new(100, 2);
    let r = b.commit(10);
    assert!(b.push(lo4(), r.clone(), 0));
    assert!(b.push(lo4(), r.clone(), 0));
    assert!(!b.push(lo4(), r, 0));
    assert_eq!(b.commit(1000), 10..100, "commit clamps to the region");
    assert_eq!(b.remaining(), 0);
    assert!(b.spare().is_empty());
}

fn gso_roundtrip(gro: bool) {
    in_netns(move || {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        assert!(tx.gso_supported(), "UDP_SEGMENT expected on Linux >= 4.18");
        let rx = UdpSocket::bind(lo4(), &opts(gro)).unwrap();
        assert_eq!(rx.gro_enabled(), gro);
        let dst = rx.local_addr().unwrap();
        let mut b = SendBatch::new(65536, 4);
        let total = 10 * 1000 + 300;
        for (k, byte) in b.spare()[..total].iter_mut().enumerate() {
            *byte = (k / 1000) as u8; // segment index
        }
        let r = b.commit(total);
        assert!(b.push(dst, r, 1000));
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (1, 0), "{:?}", rep.last_error);

        let mut rb = RecvBatch::new(16, 65535);
        let got = recv_datagrams(&rx, 11, &mut rb);
        assert_eq!(got.len(), 11, "all segments arrive");
        for (k, (_, stride, d)) in got.iter().enumerate() {
            let want = if k == 10 { 300 } else { 1000 };
            assert_eq!(d.len(), want, "segment {k}");
            assert!(d.iter().all(|&x| x == k as u8), "segment {k} content");
            if gro {
                // Coalesced or not, the stride is the segment size (or the lone last one).
                assert!(*stride == 1000 || (k == 10 && *stride == 300), "stride {stride}");
            }
        }
        let coalesced = got.iter().any(|(_, s, _)| *s == 1000)
            && (0..rb.len()).any(|i| rb.get(i).0.len > rb.get(i).0.stride);
        eprintln!(
            "gro={gro}: last batch had {} slot(s), coalesced in last batch: {coalesced}",
            rb.len()
        );
        if !gro {
            assert!(!coalesced);
        }
    });
}

/// A GSO message made of pieces (iovecs) that alternate a small header and a payload from elsewhere in the
/// region, as the TX path sends a superframe: the kernel cuts the concatenation at `segment_size`, so each
/// datagram is one header followed by its payload; pieces are shared by a second message to another socket.
#[test]
fn scatter_gather_gso_message() {
    in_netns(|| {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let rx1 = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let rx2 = UdpSocket::bind(lo4(), &opts(true)).unwrap();
        let mut b = SendBatch::with_pieces(65536, 4, 64);
        // Payloads first (as a TAP read), then 5 headers of 10 bytes: "H<k>" repeated.
        let (segs, pay, last, hl) = (5, 990, 400, 10);
        let paylen = (segs - 1) * pay + last;
        for (k, x) in b.spare()[..paylen].iter_mut().enumerate() {
            *x = (k / pay) as u8;
        }
        for k in 0..segs {
            b.spare()[paylen + k * hl..paylen + (k + 1) * hl].fill(0xa0 + k as u8);
        }
        let r = b.commit(paylen + segs * hl);
        let first = b.pieces_len();
        for k in 0..segs {
            let h = r.start + paylen + k * hl;
            assert!(b.piece(h..h + hl).is_some());
            let p = r.start + k * pay;
            assert!(b.piece(p..p + if k + 1 == segs { last } else { pay }).is_some());
        }
        let pieces = first..b.pieces_len();
        assert!(!b.push_pieces(0, rx1.local_addr().unwrap(), pieces.start..pieces.end + 1, 0));
        assert!(!b.push_pieces(0, rx1.local_addr().unwrap(), 3..3, 0));
        assert!(b.push_pieces(0, rx1.local_addr().unwrap(), pieces.clone(), (hl + pay) as u16));
        assert!(b.push_pieces(0, rx2.local_addr().unwrap(), pieces, (hl + pay) as u16));
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (2, 0), "{:?}", rep.last_error);
        assert_eq!((b.len(), b.pieces_len(), b.remaining()), (0, 0, 65536));
        for rx in [&rx1, &rx2] {
            let mut rb = RecvBatch::new(16, 65535);
            let got = recv_datagrams(rx, segs, &mut rb);
            assert_eq!(got.len(), segs);
            for (k, (_, _, d)) in got.iter().enumerate() {
                assert_eq!(
                    d.len(),
                    hl + if k + 1 == segs { last } else { pay },
                    "datagram {k}"
                );
                assert!(
                    d[..hl].iter().all(|&x| x == 0xa0 + k as u8),
                    "header of datagram {k}"
                );
                assert!(d[hl..].iter().all(|&x| x == k as u8), "payload of datagram {k}");
            }
        }
    });
}

#[test]
fn move_to_spare_never_overwrites_committed_bytes() {
    let mut b = SendBatch::new(100, 2);
    b.spare()[..10].fill(1);
    let r = b.commit(10);
    b.spare()[20..30].fill(7);
    assert!(!b.move_to_spare(5..15), "committed bytes are not spare");
    assert!(!b.move_to_spare(95..101));
    assert!(b.move_to_spare(30..40));
    assert!(b.bytes(r).iter().all(|&x| x == 1));
    assert!(b.spare()[..10].iter().all(|&x| x == 7));
}

#[test]
fn gso_send_received_as_datagrams() {
    gso_roundtrip(false);
}

#[test]
fn gso_send_received_with_gro() {
    gso_roundtrip(true);
}

#[test]
fn truncated_slots_keep_whole_datagrams_only() {
    in_netns(|| {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let plain = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let gro = UdpSocket::bind(lo4(), &opts(true)).unwrap();
        let mut b = SendBatch::new(4096, 4);
        b.spare()[..500]
            .iter_mut()
            .enumerate()
            .for_each(|(k, x)| *x = (k / 100) as u8);
        let r = b.commit(500);
        assert!(b.push(plain.local_addr().unwrap(), 0..200, 0));
        assert!(b.push(gro.local_addr().unwrap(), r, 100));
        assert_eq!(tx.send_batch(&mut b).sent, 2);
        let mut rb = RecvBatch::new(4, 150);
        assert!(wait_fd(plain.as_raw_fd(), libc::POLLIN, 1000).unwrap());
        assert_eq!(plain.recv_batch(&mut rb).unwrap(), 1);
        assert_eq!(rb.get(0).0.len, 0, "a cut datagram is not delivered");
        assert_eq!(rb.truncated(), 1);
        assert!(wait_fd(gro.as_raw_fd(), libc::POLLIN, 1000).unwrap());
        let n = gro.recv_batch(&mut rb).unwrap();
        let (meta, bytes) = rb.get(0);
        eprintln!(
            "gro into 150-byte slot: {n} slot(s), first len {} stride {}",
            meta.len, meta.stride
        );
        assert_eq!(meta.len % 100, 0);
        assert!(meta.len <= 150 && meta.len > 0);
        assert!(bytes
            .chunks(100)
            .enumerate()
            .all(|(k, d)| d.iter().all(|&x| x == k as u8)));
    });
}

#[test]
fn hard_error_is_skipped_and_counted() {
    in_netns(|| {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut b = SendBatch::new(80_000, 4);
        b.spare()[..5].copy_from_slice(b"first");
        let r1 = b.commit(5);
        let big = b.commit(70_000); // > 65507: EMSGSIZE without GSO
        b.spare()[..4].copy_from_slice(b"last");
        let r3 = b.commit(4);
        assert!(b.push(dst, r1, 0) && b.push(dst, big, 0) && b.push(dst, r3, 0));
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (2, 1));
        assert_eq!(
            rep.last_error.and_then(|e| e.raw_os_error()),
            Some(libc::EMSGSIZE)
        );
        let mut rb = RecvBatch::new(4, 2048);
        let got: Vec<Vec<u8>> = recv_datagrams(&rx, 2, &mut rb).into_iter().map(|g| g.2).collect();
        assert_eq!(got, vec![b"first".to_vec(), b"last".to_vec()]);
    });
}

#[test]
fn gso_segment_limit() {
    in_netns(|| {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let rx = UdpSocket::bind(lo4(), &opts(true)).unwrap();
        let dst = rx.local_addr().unwrap();
        let mut b = SendBatch::new(65536, 4);
        let ok = b.commit(GSO_MAX_SEGMENTS * 100);
        let too_many = b.commit(300 * 100); // more segments than any kernel allows
        let tail = b.commit(100);
        assert!(b.push(dst, ok, 100) && b.push(dst, too_many, 100) && b.push(dst, tail, 100));
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (2, 1));
        assert_eq!(rep.last_error.and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
        let mut rb = RecvBatch::new(8, 65535);
        let got = recv_datagrams(&rx, GSO_MAX_SEGMENTS + 1, &mut rb);
        assert_eq!(got.len(), GSO_MAX_SEGMENTS + 1);
        assert!(got.iter().all(|(_, _, d)| d.len() == 100));
    });
}

#[test]
fn hot_path_does_not_allocate() {
    use crate::io::tap::{Tap, TapConfig};
    use crate::io::testns::alloc_count::allocations;
    in_netns(|| {
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let set = SenderSet::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 4, &opts(false)).unwrap();
        let rx = UdpSocket::bind(lo4(), &opts(true)).unwrap();
        let dst = rx.local_addr().unwrap();
        let tap = Tap::create(&TapConfig {
            name: "ovlal0".into(),
            vnet_hdr: true,
            queues: 1,
        })
        .unwrap();
        testns::set_up("ovlal0");
        let q = &tap.queues()[0];
        let mut sb = SendBatch::new(65536, 8);
        let mut rb = RecvBatch::new(8, 65535);
        let mut frame = [0u8; 10 + 60];
        frame[10..16].copy_from_slice(&[0xff; 6]);
        frame[22..24].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        let mut rbuf = [0u8; 2048];
        let probe = allocations();
        std::hint::black_box(vec![0u8; 16]);
        assert!(allocations() > probe, "allocation counter must see allocations");
        let before = allocations();
        let mut received = 0;
        for round in 0..50u8 {
            sb.spare()[..3000].fill(round);
            let r = sb.commit(3000);
            assert!(sb.push(dst, r.clone(), 1000));
            assert!(sb.push(dst, r, 0));
            let rep = tx.send_batch(&mut sb);
            assert_eq!(rep.failed, 0);
            // The same through a set of send sockets, messages out of socket order (sorted in place).
            let r = sb.commit(3000);
            assert!(sb.push_from(3, dst, r.clone(), 1000));
            assert!(sb.push_from(1, dst, r, 0));
            let rep = set.send_batch(&mut sb);
            assert_eq!((rep.sent, rep.failed), (2, 0));
            // Scatter-gather: two GSO segments, each a header piece and a payload piece from elsewhere.
            let r = sb.commit(3000);
            let a = sb.piece(r.start..r.start + 100).unwrap();
            let _ = sb.piece(r.start + 1000..r.start + 1900).unwrap();
            let _ = sb.piece(r.start + 100..r.start + 200).unwrap();
            let _ = sb.piece(r.start + 2000..r.start + 2500).unwrap();
            assert!(sb.push_pieces(2, dst, a..a + 4, 1000));
            let rep = set.send_batch(&mut sb);
            assert_eq!((rep.sent, rep.failed), (1, 0));
            let _ = wait_fd(rx.as_raw_fd(), libc::POLLIN, 100);
            while let Ok(n) = rx.recv_batch(&mut rb) {
                for i in 0..n {
                    received += rb.datagrams(i).count();
                }
            }
            q.write(&frame).unwrap();
            let _ = q.write_vectored(&[
                std::io::IoSlice::new(&frame[..10]),
                std::io::IoSlice::new(&frame[10..]),
            ]);
            while q.read(&mut rbuf).is_ok() {}
        }
        let allocs = allocations() - before;
        assert_eq!(allocs, 0, "hot path allocated {allocs} times");
        assert!(received >= 50 * 8, "received {received}");
    });
}

#[test]
fn df_set_no_local_fragmentation() {
    in_netns(|| {
        testns::set_mtu("lo", 1500);
        let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        assert_eq!(
            getsockopt_int(tx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(),
            libc::IP_PMTUDISC_DO
        );
        let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let mut b = SendBatch::new(4000, 2);
        let r = b.commit(2000); // 2000 + 28 > 1500: would need fragmentation
        assert!(b.push(rx.local_addr().unwrap(), r, 0));
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (0, 1));
        assert_eq!(
            rep.last_error.and_then(|e| e.raw_os_error()),
            Some(libc::EMSGSIZE)
        );
    });
}

#[test]
fn addr_in_use_says_what_to_do() {
    in_netns(|| {
        let first = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let addr = first.local_addr().unwrap();
        let e = UdpSocket::bind(addr, &opts(false)).unwrap_err();
        assert!(matches!(e, UdpError::AddrInUse { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "UDP port {} on 127.0.0.1 is already in use",
                addr.port()
            )),
            "{msg}"
        );
        assert!(msg.contains("choose --port"), "{msg}");
        // SO_REUSEPORT on both sides lets workers share the port.
        let ro = UdpOptions {
            reuse_port: true,
            ..opts(false)
        };
        let a = UdpSocket::bind(lo4(), &ro).unwrap();
        let _b = UdpSocket::bind(a.local_addr().unwrap(), &ro).unwrap();
        let e = UdpSocket::bind("192.0.2.1:4789".parse().unwrap(), &opts(false)).unwrap_err();
        assert!(matches!(e, UdpError::AddrNotAvailable { .. }), "{e:?}");
    });
}

#[test]
fn privileged_port_permission() {
    in_netns(|| {
        crate::io::testns::drop_caps(&[crate::io::testns::CAP_NET_BIND_SERVICE]);
        let e = UdpSocket::bind("127.0.0.1:789".parse().unwrap(), &opts(false)).unwrap_err();
        assert!(matches!(e, UdpError::Permission { .. }), "{e:?}");
        assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"), "{e}");
    });
}

#[test]
fn dual_stack_socket_sends_to_ipv4() {
    in_netns(|| {
        let tx = UdpSocket::bind("[::]:0".parse().unwrap(), &opts(true)).unwrap();
        let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
        let mut b = SendBatch::new(64, 1);
        b.spare()[..2].copy_from_slice(b"v4");
        let r = b.commit(2);
        assert!(b.push(rx.local_addr().unwrap(), r, 0));
        let rep = tx.send_batch(&mut b);
        assert_eq!((rep.sent, rep.failed), (1, 0), "{:?}", rep.last_error);
        let mut rb = RecvBatch::new(2, 64);
        let got = recv_datagrams(&rx, 1, &mut rb);
        assert_eq!(got[0].2, b"v4");
        assert_eq!(got[0].0.port(), tx.local_addr().unwrap().port());
    });
}

#[test]
fn route_source_loopback() {
    assert_eq!(
        route_source(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap(),
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    );
    in_netns(|| {
        assert_eq!(
            route_source("127.0.0.1".parse().unwrap()).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        // No route at all in a fresh namespace.
        assert!(route_source("192.0.2.1".parse().unwrap()).is_err());
    });
}

/// `--workers`: a group of receive sockets shares the port, the kernel spreads 4-tuples over them, and a
/// group refuses to join a port someone else holds, with or without SO_REUSEPORT.
#[test]
fn receive_group_shares_the_port_and_refuses_a_held_one() {
    in_netns(|| {
        let one = bind_group(lo4(), 1, &opts(false)).unwrap();
        assert_eq!(one.len(), 1);
        let addr = one[0].local_addr().unwrap();
        // A plain socket holds the port: no group may join it (the one-socket case is the old error).
        let e = bind_group(addr, 4, &opts(false)).unwrap_err();
        assert!(matches!(e, UdpError::AddrInUse { .. }), "{e:?}");
        drop(one);
        let group = bind_group(addr, 4, &opts(false)).unwrap();
        assert_eq!(group.len(), 4);
        for s in &group {
            assert_eq!(s.local_addr().unwrap(), addr);
        }
        // A second group (another overlayd with --workers) and a lone SO_REUSEPORT socket are refused too.
        let e = bind_group(addr, 2, &opts(false)).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        // 64 senders, one datagram each: the kernel's 4-tuple hash lands them on more than one socket.
        let senders: Vec<UdpSocket> = (0..64)
            .map(|_| UdpSocket::bind(lo4(), &opts(false)).unwrap())
            .collect();
        for (i, s) in senders.iter().enumerate() {
            let mut b = SendBatch::new(64, 1);
            b.spare()[..8].copy_from_slice(&[i as u8; 8]);
            let r = b.commit(8);
            assert!(b.push(addr, r, 0));
            assert_eq!(s.send_batch(&mut b).sent, 1);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = [0usize; 4];
        let mut batch = RecvBatch::new(64, 2048);
        while got.iter().sum::<usize>() < 64 && Instant::now() < deadline {
            for (k, s) in group.iter().enumerate() {
                if let Ok(n) = s.recv_batch(&mut batch) {
                    got[k] += n;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got.iter().sum::<usize>(), 64, "{got:?}");
        assert!(
            got.iter().filter(|&&n| n > 0).count() > 1,
            "one socket took all: {got:?}"
        );
    });
}
