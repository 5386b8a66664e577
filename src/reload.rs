//! Signals: SIGTERM/SIGINT stop the daemon; SIGHUP re-reads the configuration (`--config` file under the same
//! command-line flags). What can change in place does — the static peer list (the flood set) — and every
//! other changed key is named in a warning as needing a restart. A configuration that no longer validates is
//! refused and the running one kept. Nothing here touches the data path but [`PeerSet::set`].

use crate::config::{Args, Cluster, Config};
use crate::notify::Service;
use dataplane::engine::PeerSet;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{info, warn};

/// What a reload changes, decided from the running and the newly read configuration.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// New static peer list to install (static mode only).
    pub peers: Option<Vec<IpAddr>>,
    /// Config keys that changed but only take effect on restart.
    pub needs_restart: Vec<String>,
}

/// Compare key by key (through the `--print-config` form, so every option is covered without listing them).
pub fn plan(running: &Config, new: &Config) -> ReloadPlan {
    let table = |c: &Config| match toml::Value::try_from(c.to_options()) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let (old_t, new_t) = (table(running), table(new));
    let static_mode = running.cluster == Cluster::Static && new.cluster == Cluster::Static;
    let mut out = ReloadPlan::default();
    let mut keys: Vec<&String> = old_t.keys().chain(new_t.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if old_t.get(key) == new_t.get(key) {
            continue;
        }
        if key == "peer" && static_mode {
            out.peers = Some(new.peers.clone());
        } else {
            out.needs_restart.push(key.clone());
        }
    }
    out
}

/// Holds what a reload needs: how the configuration was given and the running state it may change.
#[derive(Debug)]
pub struct Reloader {
    args: Args,
    running: Config,
    peers: Arc<PeerSet>,
}

impl Reloader {
    pub fn new(args: Args, running: Config, peers: Arc<PeerSet>) -> Reloader {
        Reloader { args, running, peers }
    }

    /// SIGHUP: re-read, validate, apply what is safe. Never fails the daemon.
    pub fn reload(&mut self) {
        let new = match self.args.resolve() {
            Ok(c) => c,
            Err(e) => {
                warn!("reload refused, keeping the running configuration: {e}");
                return;
            }
        };
        let p = plan(&self.running, &new);
        if let Some(peers) = &p.peers {
            self.peers.set(peers.iter().copied());
            info!(?peers, "reload: static peer list replaced");
            self.running.peers.clone_from(peers);
        }
        if !p.needs_restart.is_empty() {
            warn!(
                keys = %p.needs_restart.join(", "),
                "reload: these options changed but take effect only after a restart"
            );
        }
        if p.peers.is_none() && p.needs_restart.is_empty() {
            info!("reload: configuration unchanged");
        }
    }
}

/// Wait for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
pub async fn wait_for_stop(mut reloader: Reloader, service: &Service) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                service.reloading();
                reloader.reload();
                service.ready("reloaded");
            }
        }
    }
    service.stopping();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(a: &[&str]) -> Config {
        let mut v = vec!["overlayd", "--state-dir", "/nonexistent/overlayd-test"];
        v.extend_from_slice(a);
        Args::try_parse_from(v).unwrap().resolve().unwrap()
    }

    #[test]
    fn static_peers_change_in_place_others_need_restart() {
        let old = cfg(&["--peer", "10.0.0.2"]);
        assert_eq!(plan(&old, &old), ReloadPlan::default());
        let p = plan(&old, &cfg(&["--peer", "10.0.0.2", "--peer", "10.0.0.3"]));
        assert_eq!(
            p.peers,
            Some(vec![IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])])
        );
        assert!(p.needs_restart.is_empty());
        let p = plan(&old, &cfg(&["--peer", "10.0.0.2", "--vni", "5", "--ageing", "9"]));
        assert_eq!(p.peers, None);
        assert_eq!(p.needs_restart, ["ageing", "tap", "vni"]);
    }

    #[test]
    fn cluster_peers_need_restart() {
        let old = cfg(&["--init-cluster"]);
        let p = plan(&old, &cfg(&["--init-cluster", "--peer", "10.0.0.3"]));
        assert_eq!(p.peers, None);
        assert_eq!(p.needs_restart, ["peer"]);
    }

    #[test]
    fn reload_applies_file_and_refuses_bad_file() {
        let dir = std::env::temp_dir().join(format!("overlayd-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("o.toml");
        std::fs::write(&file, "peer = [\"10.0.0.2\"]\n").unwrap();
        let args = Args::try_parse_from([
            "overlayd",
            "--state-dir",
            "/nonexistent/overlayd-test",
            "--config",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let running = args.resolve().unwrap();
        let peers = Arc::new(PeerSet::new(running.peers.iter().copied()));
        let mut r = Reloader::new(args, running, peers.clone());
        std::fs::write(&file, "peer = [\"10.0.0.2\", \"10.0.0.3\"]\n").unwrap();
        r.reload();
        assert_eq!(
            &peers.snapshot()[..],
            &[IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])]
        );
        // A broken file changes nothing.
        std::fs::write(&file, "peers = [\"10.0.0.4\"]\n").unwrap();
        r.reload();
        assert_eq!(peers.snapshot().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
