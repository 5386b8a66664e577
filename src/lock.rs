//! One daemon per state dir: an exclusive `flock` on `<state-dir>/lock`, a file that holds the owner's pid.
//!
//! The kernel drops a `flock` when the process dies, even by SIGKILL, so a crashed daemon never blocks its
//! successor and there is no stale lock to clean up. The file is never deleted: unlinking a locked file
//! would let a third daemon lock a fresh inode while the second still holds the old one. Must never block:
//! a second daemon fails at once with the first one's pid.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};

/// Name of the lock file inside the state dir.
pub const LOCK_FILE: &str = "lock";

/// How long a loser waits for the winner to write its pid (it locks first, then writes).
const PID_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another overlayd (pid {pid}) is using state dir {}: stop it first (kill {pid}), or give this daemon \
         its own --state-dir",
        dir.display()
    )]
    Held { dir: PathBuf, pid: u32 },
    #[error(
        "another overlayd is using state dir {} (its pid is not readable from {}): stop it first, or give \
         this daemon its own --state-dir",
        dir.display(),
        dir.join(LOCK_FILE).display()
    )]
    HeldUnknownPid { dir: PathBuf },
    #[error("cannot create state dir {}: {source} (create it, or choose another --state-dir)", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot use lock file {}: {op}: {source} (check the permissions of --state-dir)", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

/// Held for the daemon's lifetime; dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Create `dir` (mode 0700) if missing, lock `dir/lock` and write our pid into it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LockError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        let path = dir.join(LOCK_FILE);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source: std::io::Error| LockError::Io { path, op, source }
        };
        // No O_TRUNC: the file may hold the pid of a live owner.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io("open"))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(match wait_for_pid(&mut file) {
                    Some(pid) => LockError::Held {
                        dir: dir.to_owned(),
                        pid,
                    },
                    None => LockError::HeldUnknownPid { dir: dir.to_owned() },
                })
            }
            Err(e) => return Err(io("flock")(e.into())),
        }
        file.set_len(0).map_err(io("truncate"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io("write"))?;
        Ok(StateLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The holder's pid from the lock file, retried briefly (the holder writes it right after locking).
fn wait_for_pid(file: &mut File) -> Option<u32> {
    let deadline = std::time::Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.take(64).read_to_string(&mut text));
        if let Some(pid) = read.ok().and_then(|_| parse_pid(&text)) {
            return Some(pid);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pid as the lock file holds it: decimal digits and a newline. Anything else (a file another program
/// wrote, a torn write) is no pid.
fn parse_pid(text: &str) -> Option<u32> {
    let t = text.trim_end_matches('\n');
    if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("overlayd-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn second_lock_names_the_first_pid_and_is_free_after_drop() {
        let dir = tempdir("second").join("nested");
        let first = StateLock::acquire(&dir).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(first.path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // flock locks belong to the open file description: a second open in the same process conflicts.
        let e = StateLock::acquire(&dir).unwrap_err();
        match &e {
            LockError::Held { pid, .. } => assert_eq!(*pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("--state-dir"), "{msg}");
        drop(first);
        let again = StateLock::acquire(&dir).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn stale_content_is_replaced() {
        let dir = tempdir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(LOCK_FILE),
            "999999999999 garbage that is longer than a pid\n",
        )
        .unwrap();
        let l = StateLock::acquire(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(l.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parse_pid_bytes() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("1"), Some(1));
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("\n"), None);
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid("-1\n"), None);
        assert_eq!(parse_pid("+5\n"), None);
        assert_eq!(parse_pid(" 5\n"), None);
        assert_eq!(parse_pid("12a\n"), None);
        assert_eq!(parse_pid("4294967296\n"), None);
        assert_eq!(parse_pid("99999999999\n"), None);
    }

    proptest! {
        #[test]
        fn parse_pid_never_panics_and_round_trips(s in ".{0,24}", pid in 1u32..) {
            let _ = parse_pid(&s);
            prop_assert_eq!(parse_pid(&format!("{pid}\n")), Some(pid));
        }
    }
}
