//! Glue between the control plane (`control` crate) and the data plane: obtain credentials (init, join with a
//! token, or reload), start the QUIC gossip endpoint, feed it the MACs seen behind our bridge, and apply what
//! it decides — control FDB entries and the member VTEPs used for flooding and the membership check.

use crate::config::{Cluster, Config};
use control::auth::{NodeCredential, StateDir};
use control::exposure::{Limits, QuicStats};
use control::transport::{self, Admission, GossipHandle, GossipOptions};
use control::{ControlConfig, ControlStats, MemberInfo, MemberState, Output, RevokeOutcome, Vni};
use dataplane::engine::PeerSet;
use dataplane::fdb::Fdb;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// After the FDB reports a change of its local MACs, wait this long for more before advertising (a burst of
/// new containers becomes one advert).
const LOCAL_MAC_SETTLE: Duration = Duration::from_millis(20);
/// Safety net: compare the FDB's local-MAC version with the advertised one this often (one atomic load).
const LOCAL_MAC_RECHECK: Duration = Duration::from_secs(1);

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
    pub fdb: Arc<Fdb>,
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
        config: ControlConfig::default(),
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
    let task = tokio::spawn(pump(handle, events, peers, cfg.vni, p, stop));
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
    vni: Vni,
    mut p: Plumbing,
    mut stop: oneshot::Receiver<()>,
) {
    let mut revoke = p.revoke.take();
    for peer in join {
        if let Err(e) = handle.join(peer).await {
            warn!(%peer, "cannot contact member: {e}");
        }
    }
    // The FDB pushes changes of its local MACs (dataplane::fdb::Fdb::notify_local_changes).
    let changed = Arc::new(tokio::sync::Notify::new());
    p.fdb.notify_local_changes({
        let changed = changed.clone();
        move || changed.notify_one()
    });
    let mut recheck = tokio::time::interval(LOCAL_MAC_RECHECK);
    let mut stats_tick = tokio::time::interval(STATS_COPY);
    let mut advertised = Vec::new();
    let mut advertised_version = u64::MAX;
    loop {
        tokio::select! {
            due = async {
                tokio::select! {
                    _ = changed.notified() => true,
                    _ = recheck.tick() => p.fdb.local_version() != advertised_version,
                }
            } => {
                if !due {
                    continue;
                }
                tokio::time::sleep(LOCAL_MAC_SETTLE).await;
                advertised_version = p.fdb.local_version();
                let macs = p.fdb.local_macs(Instant::now());
                if macs != advertised {
                    advertised.clone_from(&macs);
                    let entries = macs.iter().map(|m| (vni, *m, Vec::new())).collect();
                    if let Err(e) = handle.set_local(entries).await {
                        if !matches!(e, control::transport::TransportError::Stopped) {
                            warn!("cannot advertise local MACs: {e}");
                            continue;
                        }
                        warn!("control plane stopped");
                        return;
                    }
                }
            }
            _ = stats_tick.tick() => {
                if let Ok(s) = handle.stats().await {
                    if let Ok(mut c) = p.control_stats.write() {
                        *c = Some(s);
                    }
                }
                if let Ok(rtts) = handle.rtts().await {
                    for r in rtts {
                        p.gossip_rtt.observe(r.as_secs_f64());
                    }
                }
            }
            ev = events.recv() => match ev {
                Some(ev) => apply(&p, ev),
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

/// Apply one control-plane decision to the data plane (one network: every VNI maps to it; network,
/// flood-set and block outputs are not used yet).
pub fn apply(p: &Plumbing, ev: Output) {
    match ev {
        Output::FdbInstall { mac, vtep, .. } if vtep == p.local => {
            // Our own advertisement coming back: the local entry is authoritative here.
            p.fdb.remove_control(&mac);
        }
        Output::FdbInstall { mac, vtep, .. } => {
            p.fdb.install_control(mac, vtep, Instant::now());
        }
        Output::FdbRemove { mac, .. } => {
            p.fdb.remove_control(&mac);
        }
        Output::MembersChanged(rows) => {
            let vteps = rows
                .iter()
                .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect) && m.vtep != p.local)
                .map(|m| m.vtep);
            p.peers.set(vteps);
            if let Ok(mut m) = p.members.write() {
                let n = crate::observe::membership_changes(m.as_deref(), &rows);
                p.membership_changes
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                *m = Some(rows);
            }
        }
        // Multi-network outputs: wired in by the networks glue (not yet).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::fdb::Origin;
    use dataplane::wire::MacAddr;

    fn plumbing() -> Plumbing {
        Plumbing {
            local: IpAddr::from([10, 0, 0, 1]),
            fdb: Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now())),
            peers: Arc::new(PeerSet::default()),
            members: Arc::default(),
            revoke: None,
            control_stats: Arc::default(),
            membership_changes: Arc::default(),
            gossip_rtt: prometheus_client::metrics::histogram::Histogram::new(std::iter::once(1.0)),
        }
    }

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

    #[test]
    fn events_drive_fdb_and_flood_set() {
        let p = plumbing();
        let mac = MacAddr([2, 0, 0, 0, 1, 2]);
        apply(
            &p,
            Output::FdbInstall {
                vni: Vni::new(1).unwrap(),
                mac,
                vtep: IpAddr::from([10, 0, 0, 2]),
                ips: vec![],
            },
        );
        let d = p.fdb.lookup(&mac, Instant::now()).unwrap();
        assert_eq!((d.vtep, d.origin), (IpAddr::from([10, 0, 0, 2]), Origin::Control));
        apply(
            &p,
            Output::FdbRemove {
                vni: Vni::new(1).unwrap(),
                mac,
            },
        );
        assert_eq!(p.fdb.lookup(&mac, Instant::now()), None);
        apply(
            &p,
            Output::MembersChanged(vec![
                member(1, MemberState::Alive),
                member(2, MemberState::Alive),
                member(3, MemberState::Suspect),
                member(4, MemberState::Dead),
                member(5, MemberState::Left),
            ]),
        );
        let set = p.peers.snapshot();
        assert_eq!(
            &set[..],
            &[IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])]
        );
        assert_eq!(p.members.read().unwrap().as_ref().unwrap().len(), 5);
        assert_eq!(p.membership_changes.load(std::sync::atomic::Ordering::Relaxed), 5);
        // Our own MAC advertised back to us is not installed as remote.
        let own = MacAddr([2, 0, 0, 0, 1, 1]);
        p.fdb.learn(own, p.local, Origin::Local, Instant::now());
        apply(
            &p,
            Output::FdbInstall {
                vni: Vni::new(1).unwrap(),
                mac: own,
                vtep: p.local,
                ips: vec![],
            },
        );
        assert_eq!(p.fdb.lookup(&own, Instant::now()).unwrap().origin, Origin::Local);
    }
}
