//! Inside a namespace: the [`Netns`] trait (run a command, spawn a process, ping, read link counters) and the
//! [`Daemon`] it spawns (logged to a file, killed on drop, its log tail printed when a test panics).

use super::cmd::{cmdline, run_cmd, wait_until, CmdError};
use super::COUNTER;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Anything that is a network namespace: commands and processes run inside it.
pub trait Netns {
    /// The namespace name (as in `ip netns list`).
    fn ns(&self) -> &str;
    /// Directory for this testbed's log files.
    fn log_dir(&self) -> &Path;

    /// `ip netns exec <ns> cmd args…` → stdout, or an error with the exit status, stdout and stderr.
    fn exec(&self, cmd: &str, args: &[&str]) -> Result<String, CmdError> {
        run_cmd(
            Command::new("ip")
                .args(["netns", "exec", self.ns(), cmd])
                .args(args),
        )
    }

    /// Like [`Netns::exec`] but panics with the error (for commands that must work).
    fn run(&self, cmd: &str, args: &[&str]) -> String {
        self.exec(cmd, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a long-running process in the namespace. Its stdout and stderr go to a log file (see
    /// [`Daemon::log`]); it is killed when the returned [`Daemon`] is dropped.
    fn spawn(&self, cmd: &str, args: &[&str]) -> Daemon {
        let base = Path::new(cmd)
            .file_name()
            .map_or(cmd.into(), |n| n.to_string_lossy().into_owned());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log_path = self.log_dir().join(format!("{}-{base}-{n}.log", self.ns()));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create log file {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log file handle: {e}"));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(), cmd]).args(args);
        // DECISIONS: tests run one forwarding worker unless they test workers: overlayd, also started through
        // `env`/`setpriv`/…, gets `--workers 1` unless the test gives `--workers` on its command line (a
        // `workers` key in a --config file is overridden by this flag).
        let is_overlayd = |a: &str| Path::new(a).file_name().is_some_and(|n| n == "overlayd");
        let daemon_args = match is_overlayd(cmd) {
            true => Some(args),
            false => args.iter().position(|a| is_overlayd(a)).map(|i| &args[i + 1..]),
        };
        if let Some(a) = daemon_args {
            let own = |a: &&str| {
                a.starts_with("--workers") || ["--print-config", "--help", "--version"].contains(a)
            };
            if !a.iter().any(own) {
                c.args(["--workers", "1"]);
            }
            // Likewise no busy-polling (`--busy-poll-us 0`) unless the test gives it: it would only burn the
            // shared CPUs.
            let own_busy = |a: &&str| {
                a.starts_with("--busy-poll-us") || ["--print-config", "--help", "--version"].contains(a)
            };
            if !a.iter().any(own_busy) {
                c.args(["--busy-poll-us", "0"]);
            }
        }
        let line = cmdline(&c);
        // `ip netns exec` exec()s the command, so the child's pid is the process itself: signals reach it.
        let child = c
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{line}`: {e}"));
        Daemon {
            child: Some(child),
            cmdline: line,
            log_path,
            status: None,
        }
    }

    /// `ping -c count` to `to`; Ok with the counts if at least one reply came back.
    fn ping(&self, to: Ipv4Addr, count: u32) -> Result<PingStats, CmdError> {
        let to = to.to_string();
        let count = count.to_string();
        let out = self.exec("ping", &["-n", "-q", "-c", &count, "-i", "0.2", "-W", "2", &to])?;
        PingStats::parse(&out).ok_or_else(|| CmdError {
            cmdline: format!("ip netns exec {} ping … {to}", self.ns()),
            status: None,
            stdout: out,
            stderr: "cannot parse the ping summary".into(),
            spawn_error: None,
        })
    }

    /// Reads a counter of interface `dev`, e.g. `rx_packets`.
    fn link_stat(&self, dev: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{dev}/statistics/{counter}");
        let s = self.run("cat", &[&path]);
        s.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path} in {}: {e}: {s:?}", self.ns()))
    }

    /// Whether a link of that name exists in this namespace.
    fn link_exists(&self, dev: &str) -> bool {
        run_cmd(Command::new("ip").args(["-n", self.ns(), "link", "show", "dev", dev])).is_ok()
    }
}

/// Summary line of `ping -q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

impl PingStats {
    fn parse(out: &str) -> Option<PingStats> {
        // "5 packets transmitted, 5 received, 0% packet loss, time 803ms"
        let line = out.lines().find(|l| l.contains("packets transmitted"))?;
        let mut nums = line
            .split(',')
            .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
        Some(PingStats {
            transmitted: nums.next()??,
            received: nums.next()??,
        })
    }
}

/// A process running in a namespace; killed (SIGKILL) on drop unless it already exited.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    cmdline: String,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Everything the process printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill(1)`.
    pub fn signal(&self, sig: &str) -> Result<(), CmdError> {
        run_cmd(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.pid().to_string()),
        )
        .map(|_| ())
    }

    /// The exit status if the process has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_wait().is_some());
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                let _ = c.kill();
                self.status = c.wait().ok();
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- last lines of `{}` ----", self.cmdline);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
