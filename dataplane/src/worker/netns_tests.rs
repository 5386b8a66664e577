//! The forwarding loops with real TAPs and sockets in a fresh network namespace: one RX and one TX loop serve
//! every network of the table, including networks added and removed while they run.

use super::*;
use crate::engine::{EngineConfig, PeerSet, Side};
use crate::fdb::Fdb;
use crate::io::testns::{self, in_netns};
use crate::io::{Tap, TapConfig, UdpOptions};
use crate::network::{Network, NetworkTable};
use crate::wire::{vxlan, Vni, VxlanPacket};
use std::net::{Ipv4Addr, UdpSocket as StdUdp};
use std::sync::Arc;
use std::time::Duration;

/// An EtherType of the local experimental range: nothing else the kernel sends uses it.
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb6];

fn tap(name: &str) -> Arc<Tap> {
    let t = Tap::create(&TapConfig {
        name: name.into(),
        vnet_hdr: false,
        queues: 1,
    })
    .unwrap();
    testns::set_up(name);
    Arc::new(t)
}

fn net(name: &str, vni: u32, tap: Arc<Tap>, flood: &Arc<PeerSet>) -> Arc<Network> {
    let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now()));
    Arc::new(Network::new(name, Vni::new(vni).unwrap(), fdb, flood.clone()).with_tap(tap, 1500))
}

fn dgram(vni: u32, src_mac_last: u8) -> Vec<u8> {
    let mut d = vxlan::header(Vni::new(vni).unwrap()).to_vec();
    d.extend_from_slice(&[0xff; 6]);
    d.extend_from_slice(&[2, 0, 0, 0, 9, src_mac_last]);
    d.extend_from_slice(&TEST_ETHERTYPE);
    d.extend_from_slice(&[0u8; 46]);
    d
}

/// Sets `stop` and wakes the loop when dropped, so a failed assertion ends the test instead of hanging it.
struct StopOnDrop<'a>(&'a AtomicBool, &'a Waker);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        self.1.wake();
    }
}

/// Waits up to 3 s for `cond`.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        cond()
    })
}

/// Frames the RX loop wrote to a network's TAP (writing to a TAP fd hands the frame to the kernel, so the
/// count is what the test can see; the per-network counter is the loop's choice of TAP).
fn written(net: &Network) -> u64 {
    net.rx.of(0).tx_frames.load(Ordering::Relaxed)
}

#[test]
fn rx_loop_delivers_to_the_network_of_the_vni_and_follows_the_table() {
    in_netns(|| {
        let local = IpAddr::from([127, 0, 0, 1]);
        let peer = IpAddr::from([127, 0, 0, 2]);
        let members = Arc::new(PeerSet::new([peer]));
        let table = Arc::new(NetworkTable::new([net("a", 100, tap("ta100"), &members)]).unwrap());
        let cfg = EngineConfig::new(Vni::new(1).unwrap(), local);
        let engine = Engine::serving(cfg, Side::Rx, table.clone(), members.clone());
        let udp = UdpSocket::bind(SocketAddr::new(local, 0), &UdpOptions::default()).unwrap();
        let to = udp.local_addr().unwrap();
        let sender = StdUdp::bind(SocketAddr::new(peer, 0)).unwrap();
        let (stop, waker) = (AtomicBool::new(false), Waker::new().unwrap());
        let arming = Arming::new(1, 0, Spin::Keepers).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| run_rx(engine, &udp, false, &stop, &waker, arming.rx(0)));
            let _stop = StopOnDrop(&stop, &waker);
            let a = table.by_name("a").unwrap();
            sender.send_to(&dgram(100, 1), to).unwrap();
            assert!(
                eventually(|| written(&a) == 1),
                "network a's frame not written to a's TAP"
            );

            // Network b appears while the loop runs.
            table.insert(net("b", 200, tap("tb200"), &members)).unwrap();
            waker.wake();
            let b = table.by_name("b").unwrap();
            sender.send_to(&dgram(200, 2), to).unwrap();
            assert!(
                eventually(|| written(&b) == 1),
                "network b's frame not written to b's TAP"
            );
            assert_eq!(written(&a), 1, "b's frame went to a's TAP");
            assert!(b
                .fdb
                .lookup(&crate::wire::MacAddr([2, 0, 0, 0, 9, 2]), Instant::now())
                .is_some());
            assert!(a
                .fdb
                .lookup(&crate::wire::MacAddr([2, 0, 0, 0, 9, 2]), Instant::now())
                .is_none());

            // And goes again: its VNI is unknown from then on.
            table.remove("b");
            waker.wake();
            sender.send_to(&dgram(200, 3), to).unwrap();
            let unknown = || table.unattributed().drops(DropReason::UnknownVni) == 1;
            assert!(
                eventually(unknown),
                "datagram of a removed network not counted as unknown_vni"
            );
            assert_eq!((written(&a), written(&b)), (1, 1));
        });
    });
}

#[test]
fn tx_loop_polls_a_tap_added_at_runtime() {
    in_netns(|| {
        let local = IpAddr::from([127, 0, 0, 1]);
        let peer = IpAddr::from([127, 0, 0, 2]);
        let flood = Arc::new(PeerSet::new([peer]));
        let receiver = StdUdp::bind(SocketAddr::new(peer, 0)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut cfg = EngineConfig::new(Vni::new(1).unwrap(), local);
        cfg.port = receiver.local_addr().unwrap().port();
        let table = Arc::new(NetworkTable::new([net("a", 100, tap("ta100"), &flood)]).unwrap());
        let engine = Engine::serving(cfg, Side::Tx, table.clone(), flood.clone());
        let senders = SenderSet::bind(local, 1, &UdpOptions::default()).unwrap();
        let (stop, waker) = (AtomicBool::new(false), Waker::new().unwrap());
        let arming = Arming::new(1, 0, Spin::Keepers).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                run_tx(
                    engine,
                    &senders,
                    TxOffloads::default(),
                    &stop,
                    &waker,
                    arming.tx(0),
                )
            });
            let _stop = StopOnDrop(&stop, &waker);
            let tap_b = tap("tb200");
            testns::add_address("tb200", IpAddr::from([10, 9, 0, 1]), 24);
            table.insert(net("b", 200, tap_b, &flood)).unwrap();
            waker.wake();
            // The kernel resolves 10.9.0.2 with an ARP broadcast out of tb200: flooded as VNI 200.
            let probe = StdUdp::bind(SocketAddr::new(IpAddr::from([10, 9, 0, 1]), 0)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = false;
            let mut b = [0u8; 2048];
            while !got && Instant::now() < deadline {
                let _ = probe.send_to(b"x", (Ipv4Addr::new(10, 9, 0, 2), 9));
                while let Ok((n, _)) = receiver.recv_from(&mut b) {
                    let arp = VxlanPacket::new_checked(&b[..n])
                        .is_ok_and(|p| p.vni().get() == 200 && p.payload().get(12..14) == Some(&[8, 6][..]));
                    if arp {
                        got = true;
                        break;
                    }
                }
            }
            assert!(
                got,
                "no ARP from the runtime-added network's TAP reached its flood set as VNI 200"
            );
            let b = table.by_name("b").unwrap();
            assert!(b.tx.of(0).tx_datagrams.load(Ordering::Relaxed) >= 1);
        });
    });
}

#[test]
fn combined_worker_forwards_both_directions_in_one_thread() {
    in_netns(|| {
        let local = IpAddr::from([127, 0, 0, 1]);
        let peer = IpAddr::from([127, 0, 0, 2]);
        let members = Arc::new(PeerSet::new([peer]));
        let receiver = StdUdp::bind(SocketAddr::new(peer, 0)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tap_a = tap("ta100");
        testns::add_address("ta100", IpAddr::from([10, 9, 0, 1]), 24);
        let table = Arc::new(NetworkTable::new([net("a", 100, tap_a, &members)]).unwrap());
        let mut cfg = EngineConfig::new(Vni::new(1).unwrap(), local);
        cfg.port = receiver.local_addr().unwrap().port();
        let tx_engine = Engine::serving(cfg.clone(), Side::Tx, table.clone(), members.clone());
        let rx_engine = Engine::serving(cfg, Side::Rx, table.clone(), members.clone());
        let senders = SenderSet::bind(local, 1, &UdpOptions::default()).unwrap();
        let udp = UdpSocket::bind(SocketAddr::new(local, 0), &UdpOptions::default()).unwrap();
        let to = udp.local_addr().unwrap();
        let (stop, tx_waker, rx_waker) = (
            AtomicBool::new(false),
            Waker::new().unwrap(),
            Waker::new().unwrap(),
        );
        let arming = Arming::new(1, 0, Spin::Keepers).unwrap();
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                run_combined(
                    tx_engine,
                    rx_engine,
                    &senders,
                    &udp,
                    TxOffloads::default(),
                    false,
                    &stop,
                    (&tx_waker, &rx_waker),
                    (arming.tx(0), arming.rx(0)),
                )
            });
            let _stop = StopOnDrop(&stop, &tx_waker);
            let a = table.by_name("a").unwrap();
            // Underlay → TAP.
            StdUdp::bind(SocketAddr::new(peer, 0))
                .unwrap()
                .send_to(&dgram(100, 1), to)
                .unwrap();
            assert!(
                eventually(|| written(&a) == 1),
                "the combined worker did not write the datagram to the TAP"
            );
            // TAP → underlay, by the same thread: the kernel's ARP for 10.9.0.2 is flooded as VNI 100.
            let probe = StdUdp::bind(SocketAddr::new(IpAddr::from([10, 9, 0, 1]), 0)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = false;
            let mut b = [0u8; 2048];
            while !got && Instant::now() < deadline {
                let _ = probe.send_to(b"x", (Ipv4Addr::new(10, 9, 0, 2), 9));
                while let Ok((n, _)) = receiver.recv_from(&mut b) {
                    let arp = VxlanPacket::new_checked(&b[..n])
                        .is_ok_and(|p| p.vni().get() == 100 && p.payload().get(12..14) == Some(&[8, 6][..]));
                    if arp {
                        got = true;
                        break;
                    }
                }
            }
            assert!(
                got,
                "no ARP from the TAP reached the flood set through the combined worker"
            );
            // Either waker ends it.
            stop.store(true, Ordering::Relaxed);
            rx_waker.wake();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                worker.is_finished(),
                "the RX waker did not end the combined worker"
            );
        });
    });
}
