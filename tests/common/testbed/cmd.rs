//! Running commands for the testbed: `run_cmd` with a [`CmdError`] that holds everything the command printed,
//! `ip`/`ip -n` that panic on failure (set-up steps that must work), polling with a deadline, and the root
//! and iproute2 check that makes a test fail (never skip) on a machine that cannot run it.

use std::fmt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A command that failed: what ran, how it ended, and everything it printed.
#[derive(Debug, Clone)]
pub struct CmdError {
    pub cmdline: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// Set when the command could not be started at all.
    pub spawn_error: Option<String>,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.spawn_error {
            return write!(f, "cannot run `{}`: {e}", self.cmdline);
        }
        let status = self
            .status
            .map_or_else(|| "no status".to_string(), |s| s.to_string());
        write!(f, "`{}` failed ({status})", self.cmdline)?;
        if !self.stderr.trim().is_empty() {
            write!(f, "\n  stderr: {}", self.stderr.trim())?;
        }
        if !self.stdout.trim().is_empty() {
            write!(f, "\n  stdout: {}", self.stdout.trim())?;
        }
        Ok(())
    }
}

impl std::error::Error for CmdError {}

pub(super) fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; `Ok(stdout)` if it exited 0, otherwise an error holding stdout and stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String, CmdError> {
    let line = cmdline(cmd);
    let out: Output = cmd.stdin(Stdio::null()).output().map_err(|e| CmdError {
        cmdline: line.clone(),
        status: None,
        stdout: String::new(),
        stderr: String::new(),
        spawn_error: Some(e.to_string()),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(CmdError {
            cmdline: line,
            status: Some(out.status),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            spawn_error: None,
        })
    }
}

/// Runs `ip <args>` in the root namespace (only ever with `-n`/`netns` arguments) and panics on failure.
pub(super) fn ip(args: &[&str]) -> String {
    run_cmd(Command::new("ip").args(args)).unwrap_or_else(|e| panic!("testbed setup: {e}"))
}

/// `ip -n <ns> <args>`, with `args` split at whitespace (names and addresses here never contain any); panics
/// on failure.
pub(super) fn ipn(ns: &str, args: &str) -> String {
    run_cmd(Command::new("ip").args(["-n", ns]).args(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("testbed setup: {e}"))
}

/// Polls `cond` every 50 ms until it returns true (→ true) or `timeout` passes (→ false, after one last try).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics with a clear message unless we are root and `ip` works: these tests must fail, not skip, when the
/// machine cannot run them.
pub(super) fn check_prerequisites() {
    let uid = run_cmd(Command::new("id").arg("-u")).map(|s| s.trim().to_string());
    match uid {
        Ok(u) if u == "0" => {}
        Ok(u) => panic!(
            "the netns testbed needs root (uid 0, for `ip netns`), running as uid {u}: run `sudo -E cargo test`"
        ),
        Err(e) => panic!("cannot determine the user id: {e}"),
    }
    if let Err(e) = run_cmd(Command::new("ip").arg("-V")) {
        panic!("the netns testbed needs iproute2 (`ip`): {e}. Install it: apt-get install iproute2");
    }
}
