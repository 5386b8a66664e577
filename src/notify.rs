//! systemd service notification (sd_notify(3)), without libsystemd: one datagram per message on the Unix
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), plus the watchdog timing from
//! `$WATCHDOG_USEC`/`$WATCHDOG_PID`. Owns nothing else; never blocks the data path (sends are non-blocking and
//! a failed send is logged, not fatal: a missing supervisor must not stop the overlay).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is not a Unix socket path or @abstract name (vsock is not supported): fix the unit's environment or unset NOTIFY_SOCKET")]
    BadAddress(String),
    #[error("cannot create the notification socket: {0}")]
    Socket(io::Error),
}

/// Where `$NOTIFY_SOCKET` points: `/path` or `@abstract` (the `@` stands for the leading NUL byte).
pub fn parse_address(value: &OsStr) -> Result<SocketAddr, NotifyError> {
    let bytes = value.as_bytes();
    let bad = || NotifyError::BadAddress(value.to_string_lossy().into_owned());
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(value).map_err(|_| bad()),
        Some(b'@') if bytes.len() > 1 => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// The supervisor's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// `None` when `$NOTIFY_SOCKET` is unset or empty (not run by systemd with `Type=notify`).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    pub fn new(address: &OsStr) -> Result<Notifier, NotifyError> {
        let addr = parse_address(address)?;
        let sock = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        sock.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Notifier { sock, addr })
    }

    /// Send one notification, e.g. `READY=1` or `WATCHDOG=1` (newline-separated assignments).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.sock.send_to_addr(state.as_bytes(), &self.addr).map(|_| ())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (as sd_watchdog_enabled(3) advises), or `None`
/// when there is no watchdog or it is meant for another process (`$WATCHDOG_PID`).
pub fn watchdog_period(usec: Option<&OsStr>, pid: Option<&OsStr>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.to_str()?.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Counts the threads that must be alive for the watchdog to be fed: each holds an [`Alive`] guard, which
/// counts down when the thread ends, also by panic.
#[derive(Debug, Default, Clone)]
pub struct Liveness(Arc<AtomicUsize>);

#[derive(Debug)]
pub struct Alive(Arc<AtomicUsize>);

impl Liveness {
    pub fn enter(&self) -> Alive {
        self.0.fetch_add(1, Ordering::SeqCst);
        Alive(self.0.clone())
    }
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The daemon's side of the systemd protocol; every method is a no-op when not supervised.
#[derive(Debug, Default)]
pub struct Service {
    notifier: Option<Arc<Notifier>>,
    watchdog: Option<Duration>,
}

impl Service {
    /// From the environment systemd sets; a malformed `$NOTIFY_SOCKET` is logged and ignored.
    pub fn from_env() -> Service {
        let notifier = match Notifier::from_env() {
            Ok(n) => n.map(Arc::new),
            Err(e) => {
                warn!("{e}");
                None
            }
        };
        let watchdog = notifier.as_ref().and_then(|_| {
            watchdog_period(
                std::env::var_os("WATCHDOG_USEC").as_deref(),
                std::env::var_os("WATCHDOG_PID").as_deref(),
                std::process::id(),
            )
        });
        Service { notifier, watchdog }
    }

    fn send(&self, state: &str) {
        if let Some(n) = &self.notifier {
            match n.send(state) {
                Ok(()) => debug!(state, "sd_notify"),
                Err(e) => warn!("cannot notify systemd ({state:?}): {e}"),
            }
        }
    }

    /// `READY=1` with a one-line status for `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Feed the watchdog every `$WATCHDOG_USEC`/2 while `expected` threads hold an [`Alive`] of `live`;
    /// stop feeding it (so systemd restarts us) once one has died. Must run inside the tokio runtime.
    pub fn spawn_watchdog(&self, live: Liveness, expected: usize) -> Option<tokio::task::JoinHandle<()>> {
        let (notifier, period) = (self.notifier.clone()?, self.watchdog?);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let alive = live.count();
                if alive < expected {
                    warn!(
                        alive,
                        expected, "a forwarding thread has stopped: no more watchdog pings, systemd will restart overlayd"
                    );
                    return;
                }
                if let Err(e) = notifier.send("WATCHDOG=1") {
                    warn!("cannot feed the systemd watchdog: {e}");
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    #[test]
    fn addresses() {
        let a = parse_address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(a.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        let a = parse_address(OsStr::new("@sd-notify-test")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"sd-notify-test"[..]));
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            assert!(parse_address(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        let e = parse_address(OsStr::new("vsock:2:1234")).unwrap_err().to_string();
        assert!(e.contains("NOTIFY_SOCKET") && e.contains("vsock"), "{e}");
    }

    #[test]
    fn watchdog_periods() {
        let s = |v: &str| Some(OsStr::new(v).to_owned());
        let p = |usec: Option<std::ffi::OsString>, pid: Option<std::ffi::OsString>| {
            watchdog_period(usec.as_deref(), pid.as_deref(), 42)
        };
        assert_eq!(p(s("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(p(s("30000000"), s("42")), Some(Duration::from_secs(15)));
        assert_eq!(p(s("30000000"), s("43")), None, "meant for another process");
        assert_eq!(p(s("0"), None), None);
        assert_eq!(p(s("soon"), None), None);
        assert_eq!(p(None, s("42")), None);
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Both address forms deliver (the abstract one is what systemd uses in containers and tests).
    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("overlayd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(path.as_os_str()).unwrap().send("READY=1").unwrap();
        assert_eq!(recv(&rx), "READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("overlayd-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.send("WATCHDOG=1").unwrap();
        assert_eq!(recv(&rx), "WATCHDOG=1");
    }

    #[test]
    fn liveness_counts_down_on_panic() {
        let live = Liveness::default();
        let a = live.enter();
        let b = live.enter();
        assert_eq!(live.count(), 2);
        let t = std::thread::spawn(move || {
            let _b = b;
            panic!("worker died");
        });
        assert!(t.join().is_err());
        assert_eq!(live.count(), 1);
        drop(a);
        assert_eq!(live.count(), 0);
    }
}
