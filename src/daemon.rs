//! The daemon: check the host, build the TAP/bridge/UDP plumbing, start the forwarding threads and the admin
//! endpoint, and tear everything down on SIGTERM/SIGINT. All decisions live in the dataplane crate; this file
//! only wires it together.

use crate::admin::{self, AdminState};
use crate::cluster::{self, ClusterError, Plumbing};
use crate::config::Config;
use dataplane::engine::{Engine, EngineConfig, PeerSet};
use dataplane::fdb::Fdb;
use dataplane::io::{self, netlink, Tap, TapConfig, UdpOptions, UdpSocket, Waker};
use dataplane::stats::Counters;
use dataplane::worker::{self, TxOffloads};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Socket buffers: enough for a few superframe bursts per direction (SO_*BUFFORCE, we run as root).
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;
const CAP_NET_ADMIN: u32 = 12;

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
    #[error("--local {0} is not an address of this host: pass one of this host's underlay addresses")]
    LocalNotOurs(IpAddr),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Tap(#[from] io::TapError),
    #[error(transparent)]
    Udp(#[from] io::UdpError),
    #[error("cannot listen on admin address {addr}: {source} (is another overlayd running? choose another --admin)")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
}

fn has_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .map_or(true, |caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Undo what we created, in reverse order, even on early return.
struct Cleanup {
    bridge: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(b) = self.bridge.take() {
            if let Err(e) = netlink::delete_link(&b) {
                warn!("could not remove bridge {b} we created: {e}");
            }
        }
    }
}

pub fn run(cfg: Config) -> Result<(), DaemonError> {
    if !has_net_admin() {
        return Err(DaemonError::NoCapability);
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(DaemonError::NoTun);
    }
    let local = match (cfg.local, cfg.peers.first()) {
        (Some(l), _) => l,
        (None, Some(&first)) => {
            io::route_source(first).map_err(|source| DaemonError::Route { peer: first, source })?
        }
        (None, None) => return Err(DaemonError::NeedLocal),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Everything that can fail without side effects comes first: the admin socket, then credentials
    // (joining talks to the network); only then is anything created on the host.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.admin))
        .map_err(|source| DaemonError::Admin {
            addr: cfg.admin,
            source,
        })?;
    let cluster_cred = rt.block_on(cluster::credentials(&cfg, local))?;
    let cluster_mode = cluster_cred.is_some();
    let underlay = netlink::interface_with_addr(local)?.ok_or(DaemonError::LocalNotOurs(local))?;
    let overhead = if local.is_ipv4() { 50 } else { 70 };
    let mtu = cfg.mtu.unwrap_or(underlay.1.saturating_sub(overhead));

    let mut cleanup = Cleanup { bridge: None };
    if netlink::ensure_bridge(&cfg.bridge)? {
        cleanup.bridge = Some(cfg.bridge.clone());
        info!(bridge = %cfg.bridge, "created bridge");
    }
    let tap = Tap::create(&TapConfig {
        name: cfg.tap.clone(),
        vnet_hdr: cfg.offload,
        queues: 1,
    })?;
    let tso = cfg.offload
        && tap
            .set_offload(io::TUN_F_CSUM | io::TUN_F_TSO4 | io::TUN_F_TSO6 | io::TUN_F_TSO_ECN)
            .map_err(|e| warn!("TAP offloads unavailable, continuing without TSO: {e}"))
            .is_ok();
    netlink::set_mtu(tap.name(), mtu)?;
    netlink::set_master(tap.name(), &cfg.bridge)?;
    netlink::set_up(tap.name())?;

    let udp = UdpSocket::bind(
        SocketAddr::new(local, cfg.port),
        &UdpOptions {
            reuse_port: false,
            buffer_bytes: UDP_BUFFER_BYTES,
            gro: cfg.offload,
        },
    )?;
    let offloads = TxOffloads {
        udp_gso: cfg.offload && udp.gso_supported(),
    };
    let gro = udp.gro_enabled();

    let epoch = Instant::now();
    let fdb = Arc::new(Fdb::new(cfg.fdb_max, Duration::from_secs(cfg.ageing_s), epoch));
    // Static mode floods to the --peer VTEPs; cluster mode to the alive members, filled in by the control plane
    // (there --peer only names members to join through).
    let peers = Arc::new(if cluster_mode {
        PeerSet::default()
    } else {
        PeerSet::new(cfg.peers.iter().copied())
    });
    let mut ecfg = EngineConfig::new(cfg.vni, local);
    ecfg.port = cfg.port;
    ecfg.require_member = cluster_mode;
    let (tx_counters, rx_counters) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
    let tx_engine = Engine::new(ecfg.clone(), fdb.clone(), peers.clone(), tx_counters.clone());
    let rx_engine = Engine::new(ecfg, fdb.clone(), peers.clone(), rx_counters.clone());

    let members = cluster::Members::default();
    let (admission, cluster_state, quic) = match &cluster_cred {
        Some(s) => (s.admission.clone(), Some(s.state.clone()), Some(s.quic.clone())),
        None => (None, None, None),
    };
    let state = Arc::new(AdminState {
        vni: cfg.vni.get(),
        fdb: fdb.clone(),
        counters: vec![tx_counters, rx_counters],
        peers: peers.clone(),
        members: members.clone(),
        admission,
        cluster_state,
        quic,
    });
    if !cluster_mode {
        info!("control plane off (static peers, flood-and-learn); start one node with --init-cluster and join others with --peer <member> --token <`overlayctl token`> to turn it on");
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
        udp_gro = gro,
        admin = %cfg.admin,
        "overlayd up"
    );

    let stop = AtomicBool::new(false);
    let (tx_waker, rx_waker) = (Waker::new()?, Waker::new()?);
    let queue = &tap.queues()[0];
    std::thread::scope(|s| -> Result<(), DaemonError> {
        let tx = std::thread::Builder::new()
            .name("ovl-tx".into())
            .spawn_scoped(s, || {
                worker::run_tx(tx_engine, queue, &udp, offloads, &stop, &tx_waker)
            })?;
        let rx = std::thread::Builder::new()
            .name("ovl-rx".into())
            .spawn_scoped(s, || {
                worker::run_rx(rx_engine, queue, &udp, gro, &stop, &rx_waker)
            })?;
        let result = rt.block_on(async {
            let control = match cluster_cred {
                Some(setup) => {
                    let p = Plumbing {
                        local,
                        fdb: fdb.clone(),
                        peers: peers.clone(),
                        members,
                    };
                    Some(cluster::start(&cfg, setup, p)?)
                }
                None => None,
            };
            let admin = tokio::spawn(admin::serve(listener, state));
            let housekeeping = tokio::spawn({
                let fdb = fdb.clone();
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        fdb.expire(Instant::now());
                    }
                }
            });
            let r = wait_for_signal().await;
            if let Some(c) = control {
                c.leave().await;
            }
            admin.abort();
            housekeeping.abort();
            r.map_err(DaemonError::Runtime)
        });
        info!("shutting down");
        stop.store(true, Ordering::Relaxed);
        tx_waker.wake();
        rx_waker.wake();
        let _ = tx.join();
        let _ = rx.join();
        result
    })?;
    // Closing the last queue fd removes the (non-persistent) TAP; the bridge goes with `cleanup`.
    drop(tap);
    drop(cleanup);
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
}
