//! The forwarding loops with real TAPs and sockets in a fresh network namespace: one RX and one TX loop serve
//! every network of the table, including networks added and removed while they run.

use super::*;
use crate::engine::{EngineConfig, PeerSet, Side};
use crate::fdb::Fdb;
use crate::io::testns::{self, in_netns};
use crate::io::{Tap, TapConfig, UdpOptions, UdpSocket};
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

/// Make the kernel ARP for 10.9.0.2 out of the TAP holding 10.9.0.1 (a datagram to it, repeated) until that
/// ARP broadcast reaches `receiver` (the flood set) as VXLAN with `vni`; false after 5 s.
fn arp_flooded(receiver: &StdUdp, vni: u32) -> bool {
    let probe = StdUdp::bind(SocketAddr::new(IpAddr::from([10, 9, 0, 1]), 0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = probe.send_to(b"x", (Ipv4Addr::new(10, 9, 0, 2), 9));
        while let Ok((n, _)) = receiver.recv_from(&mut buf) {
            let arp = VxlanPacket::new_checked(&buf[..n])
                .is_ok_and(|p| p.vni().get() == vni && p.payload().get(12..14) == Some(&[8, 6][..]));
            if arp {
                return true;
            }
        }
    }
    false
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
            let got = arp_flooded(&receiver, 200);
            assert!(
                got,
                "no ARP from the runtime-added network's TAP reached its flood set as VNI 200"
            );
            let b = table.by_name("b").unwrap();
            assert!(b.tx.of(0).tx_datagrams.load(Ordering::Relaxed) >= 1);
        });
    });
}

/// A combined worker's surroundings on loopback (127.0.0.1): its sockets, wakers and arming; `new` also returns
/// the TX and RX engines for `table`, whose VXLAN goes to `receiver`'s port.
struct CombinedRig {
    senders: SenderSet,
    udp: UdpSocket,
    stop: AtomicBool,
    tx_waker: Waker,
    rx_waker: Waker,
    arming: Arming,
}

impl CombinedRig {
    fn new(table: &Arc<NetworkTable>, members: &Arc<PeerSet>, receiver: &StdUdp) -> (Self, Engine, Engine) {
        let local = IpAddr::from([127, 0, 0, 1]);
        let mut cfg = EngineConfig::new(Vni::new(1).unwrap(), local);
        cfg.port = receiver.local_addr().unwrap().port();
        let tx = Engine::serving(cfg.clone(), Side::Tx, table.clone(), members.clone());
        let rx = Engine::serving(cfg, Side::Rx, table.clone(), members.clone());
        let rig = CombinedRig {
            senders: SenderSet::bind(local, 1, &UdpOptions::default()).unwrap(),
            udp: UdpSocket::bind(SocketAddr::new(local, 0), &UdpOptions::default()).unwrap(),
            stop: AtomicBool::new(false),
            tx_waker: Waker::new().unwrap(),
            rx_waker: Waker::new().unwrap(),
            arming: Arming::new(1, 0, Spin::Keepers).unwrap(),
        };
        (rig, tx, rx)
    }

    /// The worker, until `stop` (run it on its own thread).
    fn run(&self, tx: Engine, rx: Engine) {
        run_combined(
            tx,
            rx,
            &self.senders,
            &self.udp,
            TxOffloads::default(),
            false,
            &self.stop,
            (&self.tx_waker, &self.rx_waker),
            (self.arming.tx(0), self.arming.rx(0)),
        )
    }
}

#[test]
fn combined_worker_forwards_both_directions_in_one_thread() {
    in_netns(|| {
        let peer = IpAddr::from([127, 0, 0, 2]);
        let members = Arc::new(PeerSet::new([peer]));
        let receiver = StdUdp::bind(SocketAddr::new(peer, 0)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tap_a = tap("ta100");
        testns::add_address("ta100", IpAddr::from([10, 9, 0, 1]), 24);
        let table = Arc::new(NetworkTable::new([net("a", 100, tap_a, &members)]).unwrap());
        let (rig, tx_engine, rx_engine) = CombinedRig::new(&table, &members, &receiver);
        let (stop, tx_waker, rx_waker) = (&rig.stop, &rig.tx_waker, &rig.rx_waker);
        let to = rig.udp.local_addr().unwrap();
        std::thread::scope(|s| {
            let worker = s.spawn(|| rig.run(tx_engine, rx_engine));
            let _stop = StopOnDrop(stop, tx_waker);
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
            let got = arp_flooded(&receiver, 100);
            assert!(
                got,
                "no ARP from the TAP reached the flood set through the combined worker"
            );
            // The RX waker ends it (as the TX waker does) well before its poll would time out: a TX wake-up
            // first makes it start a fresh POLL_MS poll, then stop + the RX waker must end it at once. The TAP
            // goes down first, so that no late ARP retry or other kernel frame wakes the worker instead.
            testns::ip(&["link", "set", "ta100", "down"]);
            std::thread::sleep(Duration::from_millis(50));
            tx_waker.wake();
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
            rx_waker.wake();
            let woken = Instant::now();
            let deadline = woken + Duration::from_millis(POLL_MS.unsigned_abs().into()) / 2;
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                worker.is_finished(),
                "the RX waker did not end the combined worker within {:?} (its poll lasts {POLL_MS} ms)",
                deadline - woken
            );
        });
    });
}

/// A combined worker re-enables a TAP it set aside as broken (deleted, then recreated behind the same fd) even
/// while RX datagrams keep arriving, so that its `poll` never times out (the split TX loop's quiet interval).
#[test]
fn combined_worker_rearms_a_tap_set_aside_under_steady_rx_traffic() {
    in_netns(|| {
        let peer = IpAddr::from([127, 0, 0, 2]);
        let members = Arc::new(PeerSet::new([peer]));
        let receiver = StdUdp::bind(SocketAddr::new(peer, 0)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let tap_a = tap("ta100");
        let table = Arc::new(
            NetworkTable::new([
                net("a", 100, tap_a.clone(), &members),
                net("b", 200, tap("tb200"), &members),
            ])
            .unwrap(),
        );
        let (rig, tx_engine, rx_engine) = CombinedRig::new(&table, &members, &receiver);
        let stop = &rig.stop;
        let to = rig.udp.local_addr().unwrap();
        let traffic_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| rig.run(tx_engine, rx_engine));
            let _stop = StopOnDrop(stop, &rig.tx_waker);
            // Steady RX traffic (to network b) every 20 ms, far inside POLL_MS.
            s.spawn(|| {
                let sender = StdUdp::bind(SocketAddr::new(peer, 0)).unwrap();
                while !traffic_done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    let _ = sender.send_to(&dgram(200, 1), to);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let b = table.by_name("b").unwrap();
            assert!(
                eventually(|| written(&b) >= 1),
                "the combined worker did not write RX datagrams to b's TAP"
            );
            // TAP a is deleted under the worker: it polls POLLERR, reads EBADFD, and is set aside (fd -1).
            testns::delete_link("ta100");
            std::thread::sleep(Duration::from_millis(300));
            // Recreated behind the same fd, without waking the worker (as if the device watcher's wake-up were
            // lost): only the periodic rebuild puts it back in the poll set.
            tap_a.reopen().unwrap();
            testns::set_up("ta100");
            testns::add_address("ta100", IpAddr::from([10, 9, 0, 1]), 24);
            // The kernel's ARP for 10.9.0.2 out of ta100 is flooded as VNI 100 once the TAP is polled again.
            let got = arp_flooded(&receiver, 100);
            let rx_written = written(&b);
            traffic_done.store(true, Ordering::Relaxed);
            assert!(
                got,
                "the recreated TAP's ARP never reached the flood set: the combined worker under RX traffic \
                 ({rx_written} datagrams written) did not re-enable the TAP it had set aside"
            );
        });
    });
}
