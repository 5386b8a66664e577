//! The daemon: check the host, build the TAP/bridge/UDP plumbing, start the forwarding threads and the admin
//! endpoint, and tear everything down on SIGTERM/SIGINT. All decisions live in the dataplane crate; this file
//! only wires it together.

use crate::admin::{self, AdminSocket, AdminState, Limits, PeerPolicy};
use crate::attach::{AttachError, Attachments};
use crate::cluster::{self, ClusterError, Plumbing};
use crate::config::{Args, Config, WorkerLoops};
use crate::devices::DevicesError;
use crate::egress::{Egress, EgressNet};
use crate::host::netlink;
use crate::lock::{LockError, StateLock};
use crate::networks::{Networks, Settings};
use crate::notify::{Liveness, Service};
use crate::observe::Observe;
use crate::ops::Ops;
use crate::privileges::{self, PrivilegeError};
use crate::reload::{self, Reloader};
use dataplane::activity::PeerActivity;
use dataplane::engine::{Engine, EngineConfig, PeerSet, Side};
use dataplane::io::{self, SenderSet, UdpOptions, Waker};
use dataplane::network::NetworkTable;
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
    Attach(#[from] AttachError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Networks(#[from] crate::networks::NetworksError),
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    #[error("no network configured: give --network NAME:VNI or --vni")]
    NoNetwork,
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
    #[error(transparent)]
    DockerPlugin(#[from] crate::docker::listen::ListenError),
    #[error("Docker driver state: {0}")]
    DockerState(#[from] crate::docker::StateError),
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
    // `--docker-plugin`: bound now so a bad address fails the start; a Unix socket is removed when the
    // listener drops (the serving task is awaited after its abort below).
    let docker_listener = match &cfg.docker_plugin {
        Some(a) => Some(rt.block_on(crate::docker::listen::bind(a))?),
        None => None,
    };
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

    let udp_opts = UdpOptions {
        reuse_port: false,
        buffer_bytes: UDP_BUFFER_BYTES,
        gro: cfg.offload,
    };
    // Receive on the VXLAN port, one socket per worker (an SO_REUSEPORT group when there are several); send
    // from `src_ports` sockets on ephemeral ports (flow entropy), shared by every worker's TX loop. One socket
    // set for every network, demultiplexed by VNI.
    let workers = cfg.workers.max(1);
    let rx_socks = io::bind_group(SocketAddr::new(local, cfg.port), workers, &udp_opts)?;
    let senders = SenderSet::bind(local, cfg.src_ports, &udp_opts)?;
    let offloads = TxOffloads {
        udp_gso: cfg.offload && senders.gso_supported(),
    };
    let gro = rx_socks.iter().all(|s| s.gro_enabled());

    let epoch = Instant::now();
    // Static mode floods to the --peer VTEPs; cluster mode to the alive members, filled in by the control plane
    // (there --peer only names members to join through). The same set is the membership check of every
    // datagram, and (for now) every network's flood set.
    let peers = Arc::new(if cluster_mode {
        PeerSet::default()
    } else {
        PeerSet::new(cfg.peers.iter().copied())
    });
    let first_vni = cfg.networks.first().map_or(cfg.vni, |n| n.vni);
    let mut ecfg = EngineConfig::new(first_vni, local);
    ecfg.port = cfg.port;
    ecfg.bum_pps = cfg.bum_pps;
    ecfg.busy_poll_us = cfg.busy_poll_us;
    // Only members (cluster) or the configured --peers (static) may inject frames, unless the operator asked
    // for kernel-style flood-and-learn from anyone.
    ecfg.require_member = cluster_mode || !cfg.learn_any_source;
    // Static peers' last datagrams (`overlayctl peers`, diag); cluster members are tracked by gossip.
    let activity = Arc::new(PeerActivity::new(
        epoch,
        if cluster_mode {
            Vec::new()
        } else {
            cfg.peers.clone()
        },
    ));
    let mut observe = Observe::new(Vec::new(), local, cluster_mode, activity.clone());
    observe.port = cfg.port;
    observe.gossip_port = cfg.gossip_port;
    observe.underlay.clone_from(&underlay.0);
    observe.underlay_mtu = underlay.1;
    let observe = Arc::new(observe);

    let table = Arc::new(NetworkTable::with_workers(workers));
    // One waker per forwarding thread: worker i's TX loop, then worker i's RX loop.
    let wakers = (0..2 * workers)
        .map(|_| Waker::new().map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    // --busy-poll-us: a loop that forwarded packets arms the loops where the answer will arrive.
    let arming = worker::Arming::new(workers, cfg.busy_poll_us, cfg.busy_poll_spin.into())?;
    let (fault_tx, mut fault_rx) = tokio::sync::mpsc::unbounded_channel();
    // Removes only what it created, on every return path (see devices.rs and networks.rs).
    let networks = Arc::new(Networks::new(
        Settings {
            local,
            default_mtu: mtu,
            offload: cfg.offload,
            state_dir: cfg.state_dir.clone(),
            fdb_max: cfg.fdb_max,
            ageing: Duration::from_secs(cfg.ageing_s),
            max_local_macs: cfg.max_local_macs,
            epoch,
            workers,
            flood: peers.clone(),
        },
        table.clone(),
        wakers.clone(),
        observe.clone(),
        fault_tx,
    ));
    for spec in &cfg.networks {
        networks.add(spec.clone())?;
    }
    // Attachments of an earlier run: keep the live ones (re-plugged into their bridges), clean the rest.
    let attachments = Arc::new(Attachments::open(&cfg.state_dir)?);
    let kept = attachments.reconcile()?;
    info!(?kept, "attachments reconciled");
    let ops = Arc::new(Ops::new(networks.clone(), attachments, cluster_mode));
    let docker_driver = match &docker_listener {
        Some(_) => Some(Arc::new(crate::docker::Driver::new(
            crate::docker::backend::OpsBackend::new(ops.clone(), rt.handle().clone()),
            Some(&cfg.state_dir),
        )?)),
        None => None,
    };
    // Egress of the networks that have it: gateway on the bridge, nft masquerade; follows the set of
    // networks (checked every EGRESS_CHECK; attachments are re-plugged and their bindings re-learned then
    // too), removed at exit.
    let egress = Arc::new(std::sync::Mutex::new(Egress::new()));
    let egress_version = table.version();
    apply_egress(&networks, &egress)?;
    ops.resync_attachments();
    // Worker i: its engines count into counter set i of every network and use queue i of every TAP.
    let tx_engines: Vec<Engine> = (0..workers)
        .map(|i| Engine::serving(ecfg.clone(), Side::Tx, table.clone(), peers.clone()).for_worker(i))
        .collect();
    let rx_engines: Vec<Engine> = (0..workers)
        .map(|i| {
            Engine::serving(ecfg.clone(), Side::Rx, table.clone(), peers.clone())
                .with_activity(activity.clone())
                .for_worker(i)
        })
        .collect();

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
        table: table.clone(),
        peers: peers.clone(),
        members: members.clone(),
        admission,
        cluster_state,
        quic,
        socket_path: cfg.admin_socket.clone(),
        observe: observe.clone(),
        ops: Some(ops.clone()),
        fdb_watch: admin::watch::FdbWatch::new(table.clone()),
    });
    if !cluster_mode {
        info!("control plane off (static peers, flood-and-learn); start one node with --init-cluster and join others with --peer <member> --token-file <file holding `overlayctl --admin-socket … token`> to turn it on");
    }

    info!(
        networks = ?cfg.networks.iter().map(|n| format!("{}:{}", n.name, n.vni.get())).collect::<Vec<_>>(),
        mtu,
        local = %SocketAddr::new(local, cfg.port),
        mode = if cluster_mode { "cluster" } else { "static" },
        peers = ?cfg.peers,
        udp_gso = offloads.udp_gso,
        src_ports = senders.len(),
        busy_poll_us = cfg.busy_poll_us,
        busy_poll_spin = ?cfg.busy_poll_spin,
        worker_loops = ?cfg.worker_loops,
        udp_gro = gro,
        workers,
        admin = %cfg.admin,
        admin_socket = %cfg.admin_socket.display(),
        "overlayd up"
    );

    let reloader = Reloader::new(args, cfg.clone(), peers.clone());
    let live = Liveness::default();
    let stop = AtomicBool::new(false);
    // Tell every forwarding loop and keeper to stop, and wake the ones asleep.
    let stop_all = || {
        stop.store(true, Ordering::Relaxed);
        wakers.iter().for_each(|w| w.wake());
        arming.wake_keepers();
    };
    std::thread::scope(|s| -> Result<(), DaemonError> {
        let mut threads = Vec::with_capacity(2 * workers);
        let pairs = tx_engines.into_iter().zip(rx_engines).zip(&rx_socks);
        for (i, ((tx_engine, rx_engine), udp)) in pairs.enumerate() {
            let (tx_alive, rx_alive) = (live.enter(), live.enter());
            let (tx_waker, rx_waker) = (&wakers[2 * i], &wakers[2 * i + 1]);
            let (senders, stop) = (&senders, &stop);
            let (tx_arm, rx_arm) = (arming.tx(i), arming.rx(i));
            let coalesce = udp.gro_enabled();
            let rx = if cfg.worker_loops == WorkerLoops::Combined {
                // --worker-loops combined: one thread for both directions (dataplane worker/combined.rs).
                std::thread::Builder::new()
                    .name(format!("ovl-wk{i}"))
                    .spawn_scoped(s, move || {
                        let _alive = (tx_alive, rx_alive);
                        worker::run_combined(
                            tx_engine,
                            rx_engine,
                            senders,
                            udp,
                            offloads,
                            coalesce,
                            stop,
                            (tx_waker, rx_waker),
                            (tx_arm, rx_arm),
                        )
                    })
            } else {
                let tx = std::thread::Builder::new()
                    .name(format!("ovl-tx{i}"))
                    .spawn_scoped(s, move || {
                        let _alive = tx_alive;
                        worker::run_tx(tx_engine, senders, offloads, stop, tx_waker, tx_arm)
                    });
                tx.and_then(|tx| {
                    threads.push(tx);
                    std::thread::Builder::new()
                        .name(format!("ovl-rx{i}"))
                        .spawn_scoped(s, move || {
                            let _alive = rx_alive;
                            worker::run_rx(rx_engine, udp, coalesce, stop, rx_waker, rx_arm)
                        })
                })
            };
            match rx {
                Ok(rx) => threads.push(rx),
                Err(e) => {
                    // The scope waits for the threads already running: stop them before failing.
                    stop_all();
                    return Err(e.into());
                }
            }
        }
        // --busy-poll-us: SCHED_IDLE threads that keep the CPUs busy around traffic (dataplane worker/keeper.rs).
        for k in 0..arming.keepers() {
            let (arming, stop) = (&arming, &stop);
            let counters = table.unattributed_all().of(k % workers).clone();
            let keeper = std::thread::Builder::new()
                .name(format!("ovl-keep{k}"))
                .spawn_scoped(s, move || {
                    if let Err(e) = arming.run_keeper(k, stop, &counters) {
                        warn!(error = %e, "busy-poll keeper {k} cannot run as SCHED_IDLE: it does not spin");
                    }
                });
            match keeper {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop_all();
                    return Err(e.into());
                }
            }
        }
        let result = rt.block_on(async {
            let control = match cluster_cred {
                Some(setup) => {
                    let p = Plumbing {
                        local,
                        ops: ops.clone(),
                        peers: peers.clone(),
                        members,
                        revoke: revoke_rx,
                        control_stats: control_stats.clone(),
                        membership_changes: observe.membership_changes.clone(),
                        gossip_rtt: observe.gossip_rtt.clone(),
                    };
                    let running = cluster::start(&cfg, setup, p)?;
                    let _ = ops.control.set(running.client());
                    Some(running)
                }
                None => None,
            };
            let fdb_watch = tokio::spawn(state.fdb_watch.clone().run());
            let admin = tokio::spawn(admin::serve_tcp(listener, state.clone(), Limits::default()));
            let docker = match (docker_listener, docker_driver) {
                (Some(l), Some(d)) => {
                    info!(addr = %cfg.docker_plugin.as_ref().map(ToString::to_string).unwrap_or_default(), "serving the Docker network and IPAM driver");
                    Some(tokio::spawn(crate::docker::listen::serve(l, d)))
                }
                _ => None,
            };
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
            let watchdog = service.spawn_watchdog(live.clone(), 2 * workers);
            let prober = tokio::spawn(crate::observe::run_prober(observe.clone(), peers.clone()));
            let housekeeping = tokio::spawn({
                let networks = networks.clone();
                async move {
                    let mut tick = tokio::time::interval(BRIDGE_SYNC);
                    loop {
                        tick.tick().await;
                        let n = networks.clone();
                        let _ = tokio::task::spawn_blocking(move || n.housekeeping()).await;
                    }
                }
            });
            let egress_watch = tokio::spawn({
                let (networks, egress, table) = (networks.clone(), egress.clone(), table.clone());
                let ops = ops.clone();
                async move {
                    let mut seen = egress_version;
                    let mut tick = tokio::time::interval(EGRESS_CHECK);
                    loop {
                        tick.tick().await;
                        let v = table.version();
                        if v == seen {
                            continue;
                        }
                        seen = v;
                        let (n, e, o) = (networks.clone(), egress.clone(), ops.clone());
                        let r = tokio::task::spawn_blocking(move || {
                            let r = apply_egress(&n, &e);
                            let replugged = o.resync_attachments();
                            if replugged > 0 {
                                info!(replugged, "attachments plugged back into their bridges");
                            }
                            r
                        });
                        match r.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!(error = %e, "cannot update egress"),
                            Err(e) => tracing::error!(error = %e, "egress update failed"),
                        }
                    }
                }
            });
            // A lost TAP/bridge that cannot be restored ends the daemon like a signal, but as an error.
            let r = tokio::select! {
                r = reload::wait_for_stop(reloader, &service) => r.map_err(DaemonError::Runtime),
                Some((name, e)) = fault_rx.recv() => {
                    tracing::error!(network = %name, "a device of this network is lost");
                    Err(DaemonError::Devices(e))
                }
            };
            if let Some(w) = watchdog {
                w.abort();
            }
            if let Some(c) = control {
                c.leave().await;
            }
            admin.abort();
            fdb_watch.abort();
            if let Some(d) = docker {
                d.abort();
                // Dropping the task drops the listener, which removes a Unix socket.
                let _ = d.await;
            }
            if let Some(a) = admin_unix {
                a.abort();
            }
            housekeeping.abort();
            egress_watch.abort();
            prober.abort();
            r
        });
        info!("shutting down");
        stop_all();
        for t in threads {
            let _ = t.join();
        }
        result
    })?;
    if let Err(e) = egress.lock().unwrap_or_else(|p| p.into_inner()).teardown() {
        warn!(error = %e, "cannot remove overlayd's egress rules (nft delete table inet overlayd)");
    }
    // Closing the last queue fd removes the (non-persistent) TAP; the bridge goes only if we created it and
    // nothing else is plugged into it.
    networks.shutdown();
    drop(networks);
    drop(admin_socket);
    info!("stopped");
    Ok(())
}

/// How often the egress task looks for a changed set of networks.
const EGRESS_CHECK: Duration = Duration::from_millis(500);

/// Make egress match the networks served now (those with `egress` and a subnet).
fn apply_egress(
    networks: &Networks,
    egress: &std::sync::Mutex<Egress>,
) -> Result<(), crate::egress::EgressError> {
    let specs = networks.specs();
    let nets: Vec<EgressNet> = specs
        .iter()
        .filter(|s| s.egress)
        .filter_map(|s| {
            s.subnet.map(|subnet| EgressNet {
                name: s.name.clone(),
                bridge: s.bridge.clone(),
                subnet,
            })
        })
        .collect();
    let ifaces: Vec<String> = specs
        .iter()
        .flat_map(|s| [s.bridge.clone(), s.tap.clone()])
        .collect();
    let mut e = egress.lock().unwrap_or_else(|p| p.into_inner());
    if nets.is_empty() && e.applied().is_empty() {
        return Ok(());
    }
    e.apply(&nets, &ifaces)?;
    if !nets.is_empty() {
        info!(networks = ?nets.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), "egress applied");
    }
    Ok(())
}
