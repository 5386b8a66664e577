//! Glue between the control plane (`control` crate) and the data plane: obtain credentials (init, join with a
//! token, or reload), start the QUIC gossip endpoint, feed it the MACs seen behind our bridge, and apply what
//! it decides — through [`apply::Glue`]: control FDB entries and bindings per network, per-network flood
//! sets, the member set (membership check), networks created/removed cluster-wide, this host's IPAM blocks.
//! Local MACs (with their addresses) of every network are pushed to the control plane as one batch
//! ([`local`]) whenever the data path reports a change.

mod advert;
pub mod apply;
pub mod local;

use advert::{advert_at, copy_stats, AbortOnDrop};

use crate::config::{Cluster, Config};
use control::auth::{NodeCredential, StateDir};
use control::exposure::{Limits, QuicStats};
use control::transport::{self, Admission, GossipHandle, GossipOptions};
use control::{ControlConfig, ControlStats, MemberInfo, Output, RevokeOutcome};
use dataplane::engine::PeerSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// At most one advert of the local MACs per this interval: a change after a quiet interval is advertised at
/// once; changes within the interval of the last advert wait for its end and go together (a burst of new
/// containers becomes few adverts). Was a 20 ms settle before every advert, which delayed every new MAC by
/// 20 ms (`examples/cluster`'s new-MAC breakdown: local → first install 22 ms at N = 4, 20 of them here).
const LOCAL_MAC_MIN_GAP: Duration = Duration::from_millis(20);
/// Compare the local versions (networks, FDBs, ARP/ND tables) with the advertised ones this often (atomic
/// loads only). The FDBs also push their changes at once; the ARP/ND tables and the network set do not.
const LOCAL_MAC_RECHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Auth(#[from] control::auth::AuthError),
    #[error(transparent)]
    Transport(#[from] control::transport::TransportError),
    /// `last` is the transport's error, which already says what to check.
    #[error("could not join the cluster through any --peer ({tried}): {last}")]
    Join { tried: String, last: String },
    #[error(
        "cannot read --ca-key-file {path}: {source} (copy `ca.key` from the --init-cluster node's state dir)"
    )]
    CaKeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Membership as `overlayctl peers` shows it; `None` in static mode.
pub type Members = Arc<RwLock<Option<Vec<MemberInfo>>>>;

/// The control plane's counters as `overlayctl stats` shows them (`control.*`); `None` in static mode.
pub type ControlCounters = Arc<RwLock<Option<ControlStats>>>;

/// How often the control-plane counters are copied for `overlayctl stats`.
const STATS_COPY: Duration = Duration::from_secs(1);

/// What cluster mode runs with: the state dir, this node's credential and, on admitters, the admission
/// (CA key + join secret) shared by the gossip endpoint and the admin endpoint (token, rotation).
#[derive(Debug)]
pub struct Setup {
    pub state: StateDir,
    pub cred: NodeCredential,
    pub admission: Option<Arc<Admission>>,
    pub quic: Arc<QuicStats>,
}

/// The credential this node uses, obtained as the configuration says (`vtep`: our underlay address, also
/// the gossip address; the certificate and attestation name it). `None`: static mode.
pub async fn credentials(cfg: &Config, vtep: IpAddr) -> Result<Option<Setup>, ClusterError> {
    let state = StateDir::new(&cfg.state_dir).with_vteps(vec![vtep]);
    let cred = match &cfg.cluster {
        Cluster::Static => return Ok(None),
        Cluster::Init if state.is_initialised() => {
            info!(dir = %cfg.state_dir.display(), "cluster already initialised here; reusing it");
            state.load_credential()?
        }
        Cluster::Init => {
            let c = state.init_cluster(vtep)?;
            info!(
                dir = %cfg.state_dir.display(),
                "created a new cluster; `overlayctl --admin-socket {} token` (as root) prints the join token",
                cfg.admin_socket.display()
            );
            c
        }
        Cluster::Join(_) if state.is_initialised() => {
            info!("already a cluster member; not joining again with the token");
            state.load_credential()?
        }
        Cluster::Join(token) => {
            let mut last = String::new();
            let mut joined = None;
            for p in &cfg.peers {
                let addr = SocketAddr::new(*p, cfg.gossip_port);
                match transport::join_cluster(addr, token, &state, vtep).await {
                    Ok(c) => {
                        info!(member = %addr, "joined the cluster");
                        joined = Some(c);
                        break;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            joined.ok_or_else(|| ClusterError::Join {
                tried: cfg
                    .peers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                last,
            })?
        }
        Cluster::Member => state.load_credential()?,
    };
    let cred = match &cfg.admitter_key {
        // `--admitter --ca-key-file`: keep the CA key and the join secret (from the token when one is
        // given, else the one stored by an earlier start) and re-issue our attestation as an admitter.
        Some(path) => {
            let key = std::fs::read_to_string(path).map_err(|source| ClusterError::CaKeyFile {
                path: path.clone(),
                source,
            })?;
            let secret = match &cfg.cluster {
                Cluster::Join(t) => Some(t.secret),
                _ => None,
            };
            let c = state.promote_admitter(&key, path, secret)?;
            info!("admitter: this node holds the CA key and admits joiners");
            c
        }
        None => cred,
    };
    let admission = Admission::from_state(&state)?.map(Arc::new);
    Ok(Some(Setup {
        state,
        cred,
        admission,
        quic: Arc::default(),
    }))
}

/// A running control plane; [`Running::leave`] on shutdown.
#[derive(Debug)]
pub struct Running {
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    client: control::transport::GossipClient,
}

impl Running {
    /// A client for the control plane's commands (network create/rm, blocks), for [`crate::ops::Ops`].
    pub fn client(&self) -> control::transport::GossipClient {
        self.client.clone()
    }

    /// Announce our leave (members withdraw us at once) and stop.
    pub async fn leave(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

#[derive(Debug)]
pub struct Plumbing {
    pub local: IpAddr,
    /// The networks (and attachments and blocks) the control plane drives.
    pub ops: Arc<crate::ops::Ops>,
    /// The alive members: the membership check of every datagram (flood sets are per network).
    pub peers: Arc<PeerSet>,
    pub members: Members,
    /// `overlayctl revoke` requests from the admin endpoint.
    pub revoke: Option<mpsc::Receiver<RevokeRequest>>,
    pub control_stats: ControlCounters,
    /// Counts membership changes for `/metrics`.
    pub membership_changes: Arc<std::sync::atomic::AtomicU64>,
    /// Gossip round trips for `/metrics` (`overlayd_gossip_rtt_seconds`).
    pub gossip_rtt: prometheus_client::metrics::histogram::Histogram,
}

/// A revoke request from the admin endpoint (see `admin::RevokeTx`).
pub type RevokeRequest = (control::NodeId, oneshot::Sender<Result<String, String>>);

/// Start gossip and the task that connects it to the data plane. Must run inside the tokio runtime.
pub fn start(cfg: &Config, setup: Setup, p: Plumbing) -> Result<Running, ClusterError> {
    let Setup {
        state,
        cred,
        admission,
        quic,
    } = setup;
    let bind = SocketAddr::new(p.local, cfg.gossip_port);
    let mut handle = transport::start(GossipOptions {
        bind,
        advertise: bind,
        vtep: p.local,
        generation: state.next_generation()?,
        credential: cred,
        admission,
        quic,
        limits: Limits::default(),
        config: ControlConfig {
            block_grace: Duration::from_secs(cfg.block_grace_s),
            ..ControlConfig::default()
        },
        seed: seed(),
        state: Some(state),
    })?;
    let (_, placeholder) = mpsc::unbounded_channel();
    let events = std::mem::replace(&mut handle.events, placeholder);
    let client = handle.client();
    let (shutdown, stop) = oneshot::channel();
    let peers = cfg
        .peers
        .iter()
        .map(|ip| SocketAddr::new(*ip, cfg.gossip_port))
        .collect();
    let task = tokio::spawn(pump(handle, events, peers, p, stop));
    info!(gossip = %bind, "control plane up");
    Ok(Running {
        shutdown,
        task,
        client,
    })
}

fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

async fn pump(
    handle: GossipHandle,
    mut events: mpsc::UnboundedReceiver<Output>,
    join: Vec<SocketAddr>,
    mut p: Plumbing,
    mut stop: oneshot::Receiver<()>,
) {
    let mut revoke = p.revoke.take();
    for peer in join {
        if let Err(e) = handle.join(peer).await {
            warn!(%peer, "cannot contact member: {e}");
        }
    }
    let table = p.ops.networks.table().clone();
    let mut glue = apply::Glue::new(
        p.local,
        table.clone(),
        p.peers.clone(),
        p.members.clone(),
        p.membership_changes.clone(),
        Some(p.ops.clone()),
    );
    let client = handle.client();
    // Every FDB pushes changes of its local MACs (dataplane::fdb::Fdb::notify_local_changes).
    let changed = Arc::new(tokio::sync::Notify::new());
    local::hook(&table, &changed);
    let mut recheck = tokio::time::interval(LOCAL_MAC_RECHECK);
    // The counters are copied by their own task: its round trips to the control plane never hold up an
    // install or an advert here.
    let stats_copy = tokio::spawn(copy_stats(
        client.clone(),
        p.control_stats.clone(),
        p.gossip_rtt.clone(),
    ));
    let _stop_copy = AbortOnDrop(stats_copy);
    let mut advertised: Option<Vec<local::Entry>> = None;
    let mut advertised_versions = Vec::new();
    // When to advertise the pending change (now, or the end of the last advert's interval). Control-plane
    // events keep being applied meanwhile (remote MACs arriving while a cluster forms do not wait for it).
    let mut settle: Option<tokio::time::Instant> = None;
    let mut last_advert: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            due = async {
                tokio::select! {
                    _ = changed.notified() => true,
                    _ = recheck.tick() => local::versions(&table) != advertised_versions,
                }
            }, if settle.is_none() => {
                if due {
                    settle = Some(advert_at(tokio::time::Instant::now(), last_advert));
                }
            }
            _ = async {
                if let Some(at) = settle {
                    tokio::time::sleep_until(at).await;
                }
            }, if settle.is_some() => {
                settle = None;
                // New networks' FDBs start pushing too.
                local::hook(&table, &changed);
                advertised_versions = local::versions(&table);
                let entries = local::entries(&table, Instant::now());
                if advertised.as_ref() != Some(&entries) {
                    if let Err(e) = handle.set_local(entries.clone()).await {
                        if !matches!(e, control::transport::TransportError::Stopped) {
                            warn!("cannot advertise local MACs: {e}");
                            continue;
                        }
                        warn!("control plane stopped");
                        return;
                    }
                    advertised = Some(entries);
                    last_advert = Some(tokio::time::Instant::now());
                }
            }
            ev = events.recv() => match ev {
                Some(ev) => glue.apply(Some(&client), ev).await,
                None => return,
            },
            req = async { match revoke.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                let Some((node, done)) = req else { revoke = None; continue };
                let answer = match handle.revoke(node).await {
                    Ok(Ok(RevokeOutcome::Revoked)) => Ok("revoked; every member enforces it within seconds".to_string()),
                    Ok(Ok(RevokeOutcome::AlreadyRevoked)) => Ok("already revoked".to_string()),
                    Ok(Ok(RevokeOutcome::Forwarded(a))) => Ok(format!("forwarded to admitter {a}, which signs and disseminates the revocation")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.to_string()),
                };
                if answer.is_ok() {
                    info!(%node, "revocation requested");
                }
                let _ = done.send(answer);
            }
            _ = &mut stop => {
                if let Err(e) = handle.leave().await {
                    warn!("could not announce leave: {e}");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::apply::Glue;
    use super::*;
    use control::{MemberState, Vni};
    use dataplane::fdb::{Fdb, Origin};
    use dataplane::neigh::{Binding, NeighOrigin};
    use dataplane::network::{Network, NetworkTable};
    use dataplane::wire::MacAddr;

    fn member(n: u8, state: MemberState) -> MemberInfo {
        MemberInfo {
            id: format!("{n:016x}"),
            addr: SocketAddr::from(([10, 0, 0, n], 7948)),
            vtep: IpAddr::from([10, 0, 0, n]),
            state,
            generation: 1,
            renewal: 0,
        }
    }

    fn net(name: &str, vni: u32) -> Arc<Network> {
        let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now()));
        Arc::new(Network::new(name, Vni::new(vni).unwrap(), fdb, Arc::default()))
    }

    #[test]
    fn outputs_land_in_the_network_of_their_vni() {
        let (a, b) = (net("a", 100), net("b", 200));
        // A network declared on this host floods to every member: the shared member set.
        let members_set: Arc<PeerSet> = Arc::default();
        let legacy = Arc::new(Network::new(
            "default",
            Vni::new(42).unwrap(),
            Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now())),
            members_set.clone(),
        ));
        let table = Arc::new(NetworkTable::new([a.clone(), b.clone(), legacy.clone()]).unwrap());
        let local = IpAddr::from([10, 0, 0, 1]);
        let mut g = Glue::new(local, table, members_set, Arc::default(), Arc::default(), None);
        let (va, vb) = (Vni::new(100).unwrap(), Vni::new(200).unwrap());
        let mac = MacAddr([2, 0, 0, 0, 1, 2]);
        let ip: IpAddr = "10.20.0.7".parse().unwrap();
        let remote = IpAddr::from([10, 0, 0, 2]);
        g.apply_state(Output::FdbInstall {
            vni: vb,
            mac,
            vtep: remote,
            ips: vec![ip],
        });
        let d = b.fdb.lookup(&mac, Instant::now()).unwrap();
        assert_eq!((d.vtep, d.origin), (remote, Origin::Control));
        assert_eq!(b.neigh.lookup(&ip), Some((mac, NeighOrigin::Control)));
        assert_eq!(
            a.fdb.lookup(&mac, Instant::now()),
            None,
            "never in another network"
        );
        assert_eq!(a.neigh.lookup(&ip), None);
        // A new list replaces the old one.
        let ip2: IpAddr = "10.20.0.8".parse().unwrap();
        g.apply_state(Output::FdbInstall {
            vni: vb,
            mac,
            vtep: remote,
            ips: vec![ip2],
        });
        assert_eq!(b.neigh.lookup(&ip), None);
        assert_eq!(b.neigh.lookup(&ip2), Some((mac, NeighOrigin::Control)));
        g.apply_state(Output::FdbRemove { vni: vb, mac });
        assert_eq!(b.fdb.lookup(&mac, Instant::now()), None);
        assert_eq!(b.neigh.lookup(&ip2), None);
        // An unknown VNI changes nothing.
        g.apply_state(Output::FdbInstall {
            vni: Vni::new(300).unwrap(),
            mac,
            vtep: remote,
            ips: vec![],
        });
        assert_eq!(b.fdb.lookup(&mac, Instant::now()), None);
        // Flood sets are per network; members are one global set.
        g.apply_state(Output::FloodSet {
            vni: va,
            vteps: vec![remote],
        });
        assert_eq!(&a.peers.snapshot()[..], &[remote]);
        assert!(b.peers.snapshot().is_empty());
        g.apply_state(Output::MembersChanged(vec![
            member(1, MemberState::Alive),
            member(2, MemberState::Alive),
            member(3, MemberState::Suspect),
            member(4, MemberState::Dead),
            member(5, MemberState::Left),
        ]));
        assert_eq!(
            &g.members_set.snapshot()[..],
            &[IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])]
        );
        assert_eq!(
            &a.peers.snapshot()[..],
            &[remote],
            "membership does not touch flood sets"
        );
        assert_eq!(g.members.read().unwrap().as_ref().unwrap().len(), 5);
        assert_eq!(g.membership_changes.load(std::sync::atomic::Ordering::Relaxed), 5);
        g.apply_state(Output::FloodSet {
            vni: va,
            vteps: vec![],
        });
        assert!(a.peers.snapshot().is_empty());
        // Our own MAC advertised back to us is not installed as remote.
        let own = MacAddr([2, 0, 0, 0, 1, 1]);
        a.fdb.learn(own, local, Origin::Local, Instant::now());
        a.neigh.learn(Binding { ip, mac: own }, Instant::now());
        g.apply_state(Output::FdbInstall {
            vni: va,
            mac: own,
            vtep: local,
            ips: vec![ip],
        });
        assert_eq!(a.fdb.lookup(&own, Instant::now()).unwrap().origin, Origin::Local);
        assert_eq!(a.neigh.lookup(&ip), Some((own, NeighOrigin::Local)));
    }

    /// An [`crate::ops::Ops`] with no network and no attachment (state in a fresh temporary dir).
    fn ops(tag: &str) -> (Arc<crate::ops::Ops>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ovl-glue-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let local = IpAddr::from([10, 0, 0, 1]);
        let observe = Arc::new(crate::observe::Observe::new(
            Vec::new(),
            local,
            true,
            Arc::new(dataplane::activity::PeerActivity::new(Instant::now(), [])),
        ));
        let (fatal, _) = tokio::sync::mpsc::unbounded_channel();
        let networks = Arc::new(crate::networks::Networks::new(
            crate::networks::Settings {
                local,
                default_mtu: 1450,
                offload: false,
                state_dir: dir.clone(),
                fdb_max: 64,
                ageing: Fdb::DEFAULT_AGEING,
                max_local_macs: 16,
                epoch: Instant::now(),
                workers: 1,
                flood: Arc::default(),
            },
            Arc::default(),
            Vec::new(),
            observe,
            fatal,
        ));
        let attachments = Arc::new(crate::attach::Attachments::open(&dir).unwrap());
        (Arc::new(crate::ops::Ops::new(networks, attachments, true)), dir)
    }

    #[test]
    fn blocks_granted_and_released_are_this_hosts_blocks() {
        let (ops, dir) = ops("blocks");
        let mut g = Glue::new(
            IpAddr::from([10, 0, 0, 1]),
            ops.networks.table().clone(),
            Arc::default(),
            Arc::default(),
            Arc::default(),
            Some(ops.clone()),
        );
        let b = |s: &str| s.parse::<control::IpNet>().unwrap();
        for block in ["10.30.0.64/26", "10.30.0.0/26", "10.30.0.0/26"] {
            g.apply_state(Output::BlockGranted {
                network: "blue".into(),
                block: b(block),
            });
        }
        assert_eq!(ops.blocks_of("blue"), [b("10.30.0.0/26"), b("10.30.0.64/26")]);
        assert!(ops.blocks_of("red").is_empty());
        g.apply_state(Output::BlockReleased {
            network: "blue".into(),
            block: b("10.30.0.0/26"),
        });
        assert_eq!(ops.blocks_of("blue"), [b("10.30.0.64/26")]);
        g.apply_state(Output::BlockReleased {
            network: "blue".into(),
            block: b("10.30.0.64/26"),
        });
        assert!(ops.blocks.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn static_mode_refuses_network_create_naming_the_flag() {
        let (ops, dir) = ops("static");
        let ops = crate::ops::Ops::new(ops.networks.clone(), ops.attachments.clone(), false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = crate::ops::networks::CreateRequest {
            name: "blue".into(),
            vni: 300,
            subnet: "10.30.0.0/16".parse().unwrap(),
            mtu: None,
            egress: false,
            block_prefix: None,
        };
        let e = rt.block_on(ops.create_network(req)).unwrap_err();
        assert_eq!(e.http_status(), 409);
        assert!(e.to_string().contains("--network"), "{e}");
        let e = rt.block_on(ops.remove_network("blue", false)).unwrap_err();
        assert_eq!(e.http_status(), 409);
        let _ = std::fs::remove_dir_all(dir);
    }
}
