//! The pump: feeds received messages, commands and due timers to the node and acts on its outputs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::persist::Persist;
use super::pool::Pool;
use super::{Command, Inbound};
use crate::admission::Directory;
use crate::auth::StateDir;
use crate::node::{ControlNode, MemberInfo, MemberState};
use crate::{Output, Timer};

/// Persist the active members' addresses when the set changes (in the background: it fsyncs).
fn remember_peers(
    file: &Persist<Vec<SocketAddr>>,
    members: &[MemberInfo],
    me: SocketAddr,
    saved: &mut Vec<SocketAddr>,
) {
    let mut peers: Vec<SocketAddr> = members
        .iter()
        .filter(|m| m.addr != me && matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .map(|m| m.addr)
        .collect();
    peers.sort_unstable();
    peers.truncate(MAX_REMEMBERED_PEERS);
    if peers.is_empty() || peers == *saved {
        return;
    }
    saved.clone_from(&peers);
    file.store(peers);
}

/// How long a leave waits for the state-dir records still being written.
const FLUSH_ON_LEAVE: Duration = Duration::from_secs(5);

/// Enough addresses that a restart finds a live member even after much churn.
const MAX_REMEMBERED_PEERS: usize = 64;

pub(super) async fn pump(
    mut node: ControlNode,
    pool: Arc<Pool>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Output>,
    state: Option<StateDir>,
    directory: Arc<Directory>,
) {
    let mut saved_peers: Vec<SocketAddr> = Vec::new();
    let peers_file = state.clone().map(|s| {
        Persist::spawn(s, "the cluster members for restarts", |s, v: &Vec<SocketAddr>| {
            s.save_peers(v)
        })
    });
    let revoked_file = state
        .clone()
        .map(|s| Persist::spawn(s, "the revocation list", |s, v| s.save_revocations(v)));
    let mut timers: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut timer_of: HashMap<u64, Timer> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send { to, bytes } => pool.send(to, bytes),
                Output::ScheduleTimer { at, timer } => {
                    timers.push(Reverse((at, next_id)));
                    timer_of.insert(next_id, timer);
                    next_id += 1;
                }
                Output::Revoked { node: id } => {
                    let _ = events.send(Output::Revoked { node: id });
                    if let Some(file) = &revoked_file {
                        file.store(node.revocations().clone());
                    }
                    // Refuse new connections at once; close existing ones off the pump.
                    pool.revoked.write().unwrap_or_else(|e| e.into_inner()).insert(id);
                    pool.close_revoked(id);
                }
                Output::MembersChanged(members) => {
                    tracing::debug!(members = members.len(), "members changed");
                    if let Some(file) = &peers_file {
                        remember_peers(file, &members, node.identity().addr, &mut saved_peers);
                    }
                    // Relay candidates for joiners: the alive members, those attested as admitters
                    // first (an admitter answers, the others decline).
                    let admitters = node.admitter_addrs();
                    let mut alive: Vec<SocketAddr> = members
                        .iter()
                        .filter(|m| m.state == MemberState::Alive)
                        .map(|m| m.addr)
                        .collect();
                    alive.sort_by_key(|a| !admitters.contains(a));
                    *directory.members.lock().unwrap_or_else(|e| e.into_inner()) = alive;
                    let _ = events.send(Output::MembersChanged(members));
                }
                other => {
                    let _ = events.send(other);
                }
            }
        }
        let next = timers.peek().map(|Reverse((at, _))| *at);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbound.recv() => {
                let Some((from, bytes)) = msg else { return };
                if let Err(e) = node.handle_message(Instant::now(), from, &bytes) {
                    tracing::debug!(%from, error = %e, "dropped gossip message");
                }
            }
            cmd = cmds.recv() => {
                let now = Instant::now();
                let r = match cmd {
                    None => return,
                    Some(Command::SetLocal(e, tx)) => { let _ = tx.send(node.set_local(now, &e)); Ok(()) }
                    Some(Command::CreateNetwork(d, tx)) => { let _ = tx.send(node.create_network(now, d)); Ok(()) }
                    Some(Command::RemoveNetwork(n, tx)) => { let _ = tx.send(node.remove_network(now, &n)); Ok(()) }
                    Some(Command::RequestBlock(n, tx)) => { let _ = tx.send(node.request_block(now, &n)); Ok(()) }
                    Some(Command::Installed(v, tx)) => { let _ = tx.send(node.installed(v)); Ok(()) }
                    Some(Command::Networks(tx)) => { let _ = tx.send(node.networks()); Ok(()) }
                    Some(Command::Join(p)) => node.join(now, p),
                    Some(Command::Members(tx)) => { let _ = tx.send(node.members()); Ok(()) }
                    Some(Command::Rtts(tx)) => { let _ = tx.send(pool.rtts()); Ok(()) }
                    Some(Command::Stats(tx)) => { let _ = tx.send(node.stats()); Ok(()) }
                    Some(Command::Revoke(id, tx)) => {
                        let _ = tx.send(node.revoke(now, id).map_err(|e| e.to_string()));
                        Ok(())
                    }
                    Some(Command::Leave(tx)) => {
                        let r = node.leave(now);
                        while let Some(out) = node.poll_output() {
                            if let Output::Send { to, bytes } = out { pool.send(to, bytes) }
                        }
                        // The runtime stops after the leave: finish the record writes still queued (a
                        // revocation stored while an earlier write was under way), bounded.
                        let files = async {
                            for f in [&peers_file, &directory.admitters_file].into_iter().flatten() {
                                f.flush().await;
                            }
                            if let Some(f) = &revoked_file {
                                f.flush().await;
                            }
                        };
                        if tokio::time::timeout(FLUSH_ON_LEAVE, files).await.is_err() {
                            tracing::error!("state-dir records still unwritten {FLUSH_ON_LEAVE:?} after the leave");
                        }
                        let _ = tx.send(());
                        r
                    }
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "control command failed");
                }
            }
            () = sleep => {
                let now = Instant::now();
                while let Some(Reverse((at, id))) = timers.peek().copied() {
                    if at > now { break; }
                    timers.pop();
                    if let Some(t) = timer_of.remove(&id) {
                        if let Err(e) = node.handle_timer(now, t) {
                            tracing::debug!(error = %e, "timer handling failed");
                        }
                    }
                }
            }
        }
    }
}
