//! The admin Unix socket: where the join token and every state-changing operation are served.
//!
//! Owns: creating the socket safely (parent directory 0700 if we create it, the socket 0600 from the moment its
//! path exists), refusing a path held by a live daemon (naming its pid), replacing a stale one, removing it on
//! exit, and checking each caller's peer credentials (SO_PEERCRED: root or the daemon's own uid only).
//! Must never: unlink anything that is not a socket, or a socket a live process still listens on.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// Default path of the admin socket (`--admin-socket`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/overlayd/admin.sock";
/// Longest Unix socket path (sun_path is 108 bytes including the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("admin socket {path} is in use by another running overlayd (pid {pid}): stop it, or give this one its own --admin-socket")]
    InUse { path: PathBuf, pid: i32 },
    #[error("{path} exists and is not a socket: remove it or choose another --admin-socket")]
    NotASocket { path: PathBuf },
    #[error("cannot check the existing admin socket {path}: {source} (remove it if no overlayd uses it, or choose another --admin-socket)")]
    Probe { path: PathBuf, source: std::io::Error },
    #[error("cannot create the admin socket directory {dir}: {source} (run as root or choose another --admin-socket)")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error(
        "cannot create the admin socket {path}: {source} (run as root or choose another --admin-socket)"
    )]
    Bind { path: PathBuf, source: std::io::Error },
}

/// A bound admin socket. Dropping it removes the socket file (if it is still ours).
#[derive(Debug)]
pub struct AdminSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    inode: (u64, u64),
}

impl AdminSocket {
    /// Create the socket at `path`. Must run inside a tokio runtime.
    pub async fn bind(path: &Path) -> Result<AdminSocket, SocketError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| SocketError::Dir {
                    dir: dir.clone(),
                    source,
                })?;
        }
        check_existing(path).await?;
        // Bind under a temporary name, make it 0600, then hard-link it into place: the final path never exists
        // with looser permissions, and link(2) fails instead of replacing a socket created meanwhile.
        let tmp = dir.join(format!(".ovl{}", std::process::id()));
        let bind_err = |source| SocketError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(bind_err)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).and_then(|()| {
            match std::fs::hard_link(&tmp, path) {
                // A filesystem without hard links: rename (atomic too, but it would replace a socket bound
                // in the instant since `check_existing`).
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => std::fs::rename(&tmp, path),
                r => r,
            }
        });
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = placed {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                // Someone bound it between our check and now: report who.
                check_existing(path).await?;
            }
            return Err(bind_err(e));
        }
        let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
        // From here on the guard removes the file if anything below fails.
        let mut sock = AdminSocket {
            listener: None,
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
        };
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        sock.listener = Some(UnixListener::from_std(std_listener).map_err(bind_err)?);
        Ok(sock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listener, for the accept loop. `None` once taken.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        // Only our own inode: a path that now names another socket is someone else's.
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.inode => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!(path = %self.path.display(), "cannot remove the admin socket: {e}");
                }
            }
            _ => {}
        }
    }
}

/// Refuse a path held by a live listener (naming its pid) or by a non-socket; unlink a stale socket.
async fn check_existing(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Probe {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let probe = tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(path)).await;
    match probe {
        Ok(Ok(s)) => {
            // SO_PEERCRED on a connected client names the process that called listen().
            let pid = s.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
            Err(SocketError::InUse {
                path: path.to_path_buf(),
                pid,
            })
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|source| SocketError::Probe {
                path: path.to_path_buf(),
                source,
            })?;
            info!(path = %path.display(), "removed a stale admin socket (no process listened on it)");
            Ok(())
        }
        Ok(Err(source)) => Err(SocketError::Probe {
            path: path.to_path_buf(),
            source,
        }),
        Err(_) => Err(SocketError::Probe {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "a process holds it but does not accept",
            ),
        }),
    }
}

/// Who may use the admin socket: root, and the uid overlayd itself runs as.
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    own_uid: Option<u32>,
}

impl PeerPolicy {
    /// Root plus this process's effective uid (read from /proc/self/status; if unreadable, root only).
    pub fn current() -> PeerPolicy {
        PeerPolicy { own_uid: own_uid() }
    }

    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || Some(uid) == self.own_uid
    }

    /// The refusal for `uid`, naming who is allowed.
    pub fn refusal(&self, uid: Option<u32>) -> String {
        let who = uid.map_or("an unknown uid".to_string(), |u| format!("uid {u}"));
        match self.own_uid {
            Some(own) if own != 0 => format!(
                "{who} may not use the overlayd admin socket: only root (uid 0) and overlayd's own uid {own} may"
            ),
            _ => format!("{who} may not use the overlayd admin socket: only root (uid 0) may"),
        }
    }

    /// Peer credentials of a connected client, checked. `Err` carries the refusal message.
    pub fn check(&self, s: &UnixStream) -> Result<(), String> {
        match s.peer_cred() {
            Ok(c) if self.allows(c.uid()) => Ok(()),
            Ok(c) => Err(self.refusal(Some(c.uid()))),
            Err(_) => Err(self.refusal(None)),
        }
    }
}

fn own_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovl-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn socket_lifecycle() {
        rt().block_on(async {
            let base = tmpdir("life");
            let path = base.join("run/admin.sock");
            let s = AdminSocket::bind(&path).await.unwrap();
            let dir_mode = std::fs::metadata(base.join("run")).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700, "created parent dir");
            let m = std::fs::symlink_metadata(&path).unwrap();
            assert!(m.file_type().is_socket());
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
            // A second bind on the same path is refused, naming our pid.
            match AdminSocket::bind(&path).await.unwrap_err() {
                SocketError::InUse { pid, .. } => assert_eq!(pid as u32, std::process::id()),
                e => panic!("{e}"),
            }
            assert!(path.exists(), "the refused bind must not remove the live socket");
            drop(s);
            assert!(!path.exists(), "removed on drop");

            // A stale socket (nobody listens) is replaced.
            let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
            drop(stale);
            assert!(path.exists());
            let s = AdminSocket::bind(&path).await.unwrap();
            drop(s);

            // A regular file is never unlinked.
            std::fs::write(&path, b"x").unwrap();
            assert!(matches!(
                AdminSocket::bind(&path).await.unwrap_err(),
                SocketError::NotASocket { .. }
            ));
            assert_eq!(std::fs::read(&path).unwrap(), b"x");
            std::fs::remove_dir_all(&base).unwrap();
        });
    }

    #[test]
    fn peer_policy() {
        let p = PeerPolicy { own_uid: Some(1000) };
        assert!(p.allows(0) && p.allows(1000) && !p.allows(65534));
        assert!(p.refusal(Some(65534)).contains("uid 65534"));
        let root_only = PeerPolicy { own_uid: Some(0) };
        assert!(!root_only.allows(1000));
        assert!(root_only.refusal(Some(1000)).contains("only root (uid 0) may"));
        assert!(PeerPolicy { own_uid: None }.allows(0));
        assert!(own_uid().is_some());
    }
}
