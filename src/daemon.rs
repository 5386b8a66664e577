//! The daemon: check the host, build the TAP/bridge/UDP plumbing, start the forwarding threads and the admin
//! endpoint, and tear everything down on SIGTERM/SIGINT. All decisions live in the dataplane crate; this file
//! only wires it together.

use crate::admin::{self, AdminSocket, AdminState, Limits, PeerPolicy};
use crate::cluster::{self, ClusterError, Plumbing};
use crate::config::{Args, Config};
use crate::devices::{DeviceSpec, Devices, DevicesError};
use crate::lock::{LockError, StateLock};
use crate::notify::{Liveness, Service};
use crate::observe::{NetworkInfo, Observe, DEFAULT_NETWORK};
use crate::privileges::{self, PrivilegeError};
use crate::reload::{self, Reloader};
use dataplane::activity::PeerActivity;
use dataplane::engine::{Engine, EngineConfig, PeerSet};
use dataplane::fdb::Fdb;
use dataplane::io::{self, netlink, SenderSet, UdpOptions, UdpSocket, Waker};
use dataplane::stats::Counters;
use dataplane::worker::{self, TxOffloads};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Socket buffers: enough for a few superframe bursts per direction (SO_*BUFFORCE, we run as root).
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// How often local FDB entries are reconciled with the bridge's table (and aged entries expired).
const BRIDGE_SYNC: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("overlayd needs CAP_NET_ADMIN to create TAP devices and bridges: run it as root or grant the capability (setcap cap_net_admin+ep overlayd)")]
    NoCapability,
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun) or create the node (mknod /dev/net/tun c 10 200)")]
    NoTun,
    #[error("cannot find the local underlay address towards peer {peer}: {source} (check the underlay routes or pass --local)")]
    Route { peer: IpAddr, source: std::io::Error },
    #[error("no --peer to derive the underlay address from: pass --local <this host's underlay IP>")]
    NeedLocal,
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Underlay(#[from] crate::underlay::UnderlayError),
    #[error("--local {0} is not an address of this host: pass one of this host's underlay addresses")]
    LocalNotOurs(IpAddr),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Tap(#[from] io::TapError),
    #[error(transparent)]
    Devices(#[from] DevicesError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Udp(#[from] io::UdpError),
    #[error("cannot listen on admin address {addr}: {source} (is another overlayd running? choose another --admin)")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    AdminSocket(#[from] admin::socket::SocketError),
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Run until SIGTERM/SIGINT. `args` is kept to re-read the configuration on SIGHUP.
pub fn run(cfg: Config, args: Args) -> Result<(), DaemonError> {
    let service = Service::from_env();
    if !io::tap::has_cap_net_admin() {
        return Err(DaemonError::NoCapability);
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(DaemonError::NoTun);
    }
    // Least privilege, before any thread exists (capabilities are per thread; see privileges.rs).
    let ports = [cfg.port, cfg.gossip_port, cfg.admin.port()];
    let kept = privileges::drop_all_but(privileges::needed(&ports))?;
    info!(capabilities = ?kept, "dropped every other capability");
    // First of all: one daemon per state dir (released by the kernel when we exit or die).
    let _lock = StateLock::acquire(&cfg.state_dir)?;
    let local = match (cfg.local, cfg.peers.first()) {
        (Some(l), _) => l,
        (None, Some(&first)) => {
            io::route_source(first).map_err(|source| DaemonError::Route { peer: first, source })?
        }
        (None, None) => return Err(DaemonError::NeedLocal),
    };
    // Static peers and cluster seeds alike: one socket bound to `local` must reach them all.
    crate::underlay::check(local, &cfg.peers)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Everything that can fail without side effects comes first: the admin listeners, then credentials
    // (joining talks to the network); only then is anything created on the host.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.admin))
        .map_err(|source| DaemonError::Admin {
            addr: cfg.admin,
            source,
        })?;
    // Removed when `admin_socket` drops, on every return path below.
    let mut admin_socket = rt.block_on(AdminSocket::bind(&cfg.admin_socket))?;
    let cluster_cred = rt.block_on(cluster::credentials(&cfg, local))?;
    let cluster_mode = cluster_cred.is_some();
    let underlay = netlink::interface_with_addr(local)?.ok_or(DaemonError::LocalNotOurs(local))?;
    let overhead = dataplane::wire::vxlan::vxlan_overhead(local);
    let mtu = cfg.mtu.unwrap_or(underlay.1.saturating_sub(overhead));
    // Issue 9 §3: name the fix when the overlay MTU does not fit the underlay (a warning: the data path copes).
    let paths: Vec<(IpAddr, u32)> = cfg
        .peers
        .iter()
        .filter_map(|&p| dataplane::io::pmtu::path_mtu(local, p).ok().map(|m| (p, m)))
        .collect();
    let measured = crate::mtu_check::UnderlayMtu {
        iface: &underlay.0,
        iface_mtu: underlay.1,
        overhead,
        paths: &paths,
    };
    if let Some(w) = crate::mtu_check::mismatch(mtu, &measured) {
        warn!("{w}");
    }

    // Removes only what it created, on every return path (see devices.rs).
    let devices = Devices::setup(DeviceSpec {
        tap: cfg.tap.clone(),
        bridge: cfg.bridge.clone(),
        mtu,
        offload: cfg.offload,
        state_dir: cfg.state_dir.clone(),
    })?;
    let (tap, tso) = (devices.tap(), devices.tso());
    let watcher = devices.watcher()?;
    let tap_mtu = u16::try_from(mtu).unwrap_or(u16::MAX);

    let udp_opts = UdpOptions {
        reuse_port: false,
        buffer_bytes: UDP_BUFFER_BYTES,
        gro: cfg.offload,
    };
    // Receive on the VXLAN port; send from `src_ports` sockets on ephemeral ports (flow entropy).
    let udp = UdpSocket::bind(SocketAddr::new(local, cfg.port), &udp_opts)?;
    let senders = SenderSet::bind(local, cfg.src_ports, &udp_opts)?;
    let offloads = TxOffloads {
        udp_gso: cfg.offload && senders.gso_supported(),
    };
    let gro = udp.gro_enabled();

    let epoch = Instant::now();
    let fdb = Arc::new(
        Fdb::new(cfg.fdb_max, Duration::from_secs(cfg.ageing_s), epoch).with_max_local(cfg.max_local_macs),
    );
    // Static mode floods to the --peer VTEPs; cluster mode to the alive members, filled in by the control plane
    // (there --peer only names members to join through).
    let peers = Arc::new(if cluster_mode {
        PeerSet::default()
    } else {
        PeerSet::new(cfg.peers.iter().copied())
    });
    let mut ecfg = EngineConfig::new(cfg.vni, local);
    ecfg.port = cfg.port;
    ecfg.bum_pps = cfg.bum_pps;
    // Only members (cluster) or the configured --peers (static) may inject frames, unless the operator asked
    // for kernel-style flood-and-learn from anyone.
    ecfg.require_member = cluster_mode || !cfg.learn_any_source;
    let (tx_counters, rx_counters) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
    // Static peers' last datagrams (`overlayctl peers`, diag); cluster members are tracked by gossip.
    let activity = Arc::new(PeerActivity::new(
        epoch,
        if cluster_mode {
            Vec::new()
        } else {
            cfg.peers.clone()
        },
    ));
    let tx_engine = Engine::new(ecfg.clone(), fdb.clone(), peers.clone(), tx_counters.clone());
    let rx_engine =
        Engine::new(ecfg, fdb.clone(), peers.clone(), rx_counters.clone()).with_activity(activity.clone());
    let mut observe = Observe::new(
        vec![NetworkInfo {
            name: DEFAULT_NETWORK.to_string(),
            vni: cfg.vni,
            bridge: cfg.bridge.clone(),
            tap: tap.name().to_string(),
            mtu,
        }],
        local,
        cluster_mode,
        activity,
    );
    observe.port = cfg.port;
    observe.gossip_port = cfg.gossip_port;
    observe.underlay.clone_from(&underlay.0);
    observe.underlay_mtu = underlay.1;
    let observe = Arc::new(observe);

    let members = cluster::Members::default();
    let control_stats = cluster::ControlCounters::default();
    let (admission, cluster_state, quic) = match &cluster_cred {
        Some(s) => (s.admission.clone(), Some(s.state.clone()), Some(s.quic.clone())),
        None => (None, None, None),
    };
    let (revoke_tx, revoke_rx) = match cluster_mode {
        true => {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let state = Arc::new(AdminState {
        revoke: revoke_tx,
        control_stats: control_stats.clone(),
        vni: cfg.vni.get(),
        fdb: fdb.clone(),
        counters: vec![tx_counters, rx_counters, fdb.counters().clone()],
        peers: peers.clone(),
        members: members.clone(),
        admission,
        cluster_state,
        quic,
        socket_path: cfg.admin_socket.clone(),
        observe: observe.clone(),
    });
    if !cluster_mode {
        info!("control plane off (static peers, flood-and-learn); start one node with --init-cluster and join others with --peer <member> --token-file <file holding `overlayctl --admin-socket … token`> to turn it on");
    }

    info!(
        vni = cfg.vni.get(),
        tap = tap.name(),
        bridge = %cfg.bridge,
        mtu,
        local = %SocketAddr::new(local, cfg.port),
        mode = if cluster_mode { "cluster" } else { "static" },
        peers = ?cfg.peers,
        tso,
        udp_gso = offloads.udp_gso,
        src_ports = senders.len(),
        udp_gro = gro,
        admin = %cfg.admin,
        admin_socket = %cfg.admin_socket.display(),
        "overlayd up"
    );

    let reloader = Reloader::new(args, cfg.clone(), peers.clone());
    let live = Liveness::default();
    let stop = AtomicBool::new(false);
    let (tx_waker, rx_waker) = (Waker::new()?, Waker::new()?);
    let queue = &tap.queues()[0];
    let (fault_tx, fault_rx) = tokio::sync::oneshot::channel();
    std::thread::scope(|s| -> Result<(), DaemonError> {
        let (tx_alive, rx_alive) = (live.enter(), live.enter());
        let tx = std::thread::Builder::new()
            .name("ovl-tx".into())
            .spawn_scoped(s, || {
                let _alive = tx_alive;
                worker::run_tx(tx_engine, queue, &senders, offloads, &stop, &tx_waker)
            })?;
        let rx = std::thread::Builder::new()
            .name("ovl-rx".into())
            .spawn_scoped(s, || {
                let _alive = rx_alive;
                worker::run_rx(rx_engine, queue, &udp, gro, tap_mtu, &stop, &rx_waker)
            })?;
        std::thread::Builder::new()
            .name("ovl-devices".into())
            .spawn_scoped(s, || watcher.run(&stop, fault_tx, || tx_waker.wake()))?;
        let result = rt.block_on(async {
            let control = match cluster_cred {
                Some(setup) => {
                    let p = Plumbing {
                        local,
                        fdb: fdb.clone(),
                        peers: peers.clone(),
                        members,
                        revoke: revoke_rx,
                        control_stats: control_stats.clone(),
                        membership_changes: observe.membership_changes.clone(),
                        gossip_rtt: observe.gossip_rtt.clone(),
                    };
                    Some(cluster::start(&cfg, setup, p)?)
                }
                None => None,
            };
            let admin = tokio::spawn(admin::serve_tcp(listener, state.clone(), Limits::default()));
            let admin_unix = admin_socket.take_listener().map(|l| {
                tokio::spawn(admin::serve_unix(
                    l,
                    state,
                    Limits::default(),
                    PeerPolicy::current(),
                ))
            });
            // TAP up and attached, forwarding threads running, cluster credential in hand (a --token join has
            // completed above), admin listeners serving: tell systemd.
            service.ready(if cluster_mode {
                "forwarding (cluster)"
            } else {
                "forwarding (static peers)"
            });
            let watchdog = service.spawn_watchdog(live.clone(), 2);
            let prober = tokio::spawn(crate::observe::run_prober(observe.clone(), peers.clone()));
            let housekeeping = tokio::spawn({
                let (fdb, bridge, tap) = (fdb.clone(), cfg.bridge.clone(), tap.name().to_string());
                async move {
                    let mut tick = tokio::time::interval(BRIDGE_SYNC);
                    let mut bridge_ok = true;
                    loop {
                        tick.tick().await;
                        bridge_ok = sync_local_macs(&fdb, &bridge, &tap, local, bridge_ok);
                        fdb.expire(Instant::now());
                    }
                }
            });
            // A lost TAP/bridge that cannot be restored ends the daemon like a signal, but as an error.
            let r = tokio::select! {
                r = reload::wait_for_stop(reloader, &service) => r.map_err(DaemonError::Runtime),
                Ok(e) = fault_rx => Err(DaemonError::Devices(e)),
            };
            if let Some(w) = watchdog {
                w.abort();
            }
            if let Some(c) = control {
                c.leave().await;
            }
            admin.abort();
            if let Some(a) = admin_unix {
                a.abort();
            }
            housekeeping.abort();
            prober.abort();
            r
        });
        info!("shutting down");
        stop.store(true, Ordering::Relaxed);
        tx_waker.wake();
        rx_waker.wake();
        let _ = tx.join();
        let _ = rx.join();
        result
    })?;
    // Closing the last queue fd removes the (non-persistent) TAP; the bridge goes only if we created it and
    // nothing else is plugged into it.
    drop(devices);
    drop(admin_socket);
    info!("stopped");
    Ok(())
}

/// Which MACs are `local` follows our bridge's own table (issue 8, DECISIONS: "local" = on a non-TAP port of
/// our bridge): a MAC that left it may be claimed from elsewhere, one that is there may not. One netlink dump
/// of the bridge table per call, off the forwarding threads. Returns whether the bridge could be read; logs
/// only changes.
fn sync_local_macs(fdb: &Fdb, bridge: &str, tap: &str, local: IpAddr, was_ok: bool) -> bool {
    let read_at = Instant::now();
    match io::bridge_macs(bridge, tap) {
        Ok(macs) => {
            // The bridge's and the ports' own addresses count as present but are not announced as containers.
            let on_bridge: Vec<_> = macs.iter().map(|b| (b.mac, !b.permanent)).collect();
            fdb.sync_bridge(&on_bridge, local, read_at, Instant::now());
            if !was_ok {
                info!(%bridge, "reading the bridge's forwarding table works again");
            }
            true
        }
        Err(e) => {
            if was_ok {
                warn!(%bridge, "cannot read the bridge's forwarding table ({e}); local MACs now only follow TAP traffic and ageing");
            }
            false
        }
    }
}
