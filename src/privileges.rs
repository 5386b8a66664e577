//! Least privilege (issue 9 §7, DECISIONS "Capabilities and state"): overlayd keeps CAP_NET_ADMIN, and for
//! attaching containers (issue 10 §3) CAP_SYS_ADMIN and CAP_SYS_PTRACE.
//!
//! Owns: dropping every other capability from the bounding, permitted, effective, inheritable and ambient
//! sets, and setting `no_new_privs`, once, at start.
//! Must never: run after a thread has been spawned. Capabilities are per thread on Linux, and a thread
//! keeps the sets it had when it was created, so the drop happens on the main thread before the tokio
//! runtime, the forwarding threads and the device watcher exist; they all inherit the reduced sets.
//!
//! What needs which capability after the drop:
//! - CAP_NET_ADMIN: creating and re-creating the TAP and the bridge (also by the device watcher after a lost
//!   device), netlink link/FDB changes, `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`.
//! - CAP_SYS_ADMIN: `setns` into a container's network namespace ([`crate::host::Netns::run`], attach).
//! - CAP_SYS_PTRACE: opening `/proc/PID/ns/net` of a container process (`attach --netns PID`). The kernel
//!   checks ptrace read access there, and a process whose permitted capabilities are not a subset of ours
//!   (any container's root: Docker's default set has CAP_CHOWN, CAP_KILL, …) is only reachable with
//!   CAP_SYS_PTRACE; a pidfd `setns` makes the same check. Verified by
//!   `tests/host_attach/lifecycle.rs::attach_by_pid_after_the_capability_drop`. `ip netns` names and paths
//!   need it not.
//! - CAP_NET_BIND_SERVICE: kept only when a configured port (VXLAN, gossip, admin) is below 1024.
//! - Nothing else. The state dir, its lock and state files, and the admin socket are created by the daemon
//!   itself (uid 0), so the owner's permission bits let it in without CAP_DAC_OVERRIDE. The configuration
//!   file and `--token-file` are read before `run` (in `config`), so with every capability.
//! - CAP_NET_RAW is not used: whoever adds a use adds it to [`needed`].
//! - The `nft` child of [`crate::egress`] runs as uid 0 with `no_new_privs`: it gets the daemon's permitted
//!   set (never more), which includes the CAP_NET_ADMIN it needs.

use rustix::thread::{self, CapabilitySet, CapabilitySets};

/// The highest capability number any kernel defines today is 40 (CAP_CHECKPOINT_RESTORE); the bounding set
/// is probed up to the first number the running kernel does not know.
const MAX_CAP: u32 = 63;
/// CAP_SETPCAP: needed to drop from the bounding set.
const SETPCAP: CapabilitySet = CapabilitySet::SETPCAP;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot read this process's capabilities: {0} (is /proc mounted and capget allowed?)")]
    Read(#[source] rustix::io::Errno),
    #[error("cannot drop capability {cap} from the bounding set: {source} (run overlayd as root, or with CAP_SETPCAP as well as CAP_NET_ADMIN)")]
    Bounding {
        cap: u32,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("cannot reduce capabilities to {keep:?}: {source}")]
    Set {
        keep: CapabilitySet,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("cannot clear the ambient capabilities: {0}")]
    Ambient(#[source] rustix::io::Errno),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] rustix::io::Errno),
}

/// The capabilities overlayd needs for its whole life, given the ports it listens on.
pub fn needed(ports: &[u16]) -> CapabilitySet {
    let mut keep = CapabilitySet::NET_ADMIN | CapabilitySet::SYS_ADMIN | CapabilitySet::SYS_PTRACE;
    if ports.iter().any(|&p| p < 1024) {
        keep |= CapabilitySet::NET_BIND_SERVICE;
    }
    keep
}

/// Drops every capability outside `keep` from the calling thread (call it before spawning any thread) and
/// sets `no_new_privs`. Returns the effective set afterwards. Without CAP_SETPCAP (e.g. a non-root daemon
/// given only file capabilities) the bounding set cannot be changed; it then only matters for `execve`,
/// which `no_new_privs` and an empty inheritable/ambient set already make harmless.
pub fn drop_all_but(keep: CapabilitySet) -> Result<CapabilitySet, PrivilegeError> {
    let now = thread::capabilities(None).map_err(PrivilegeError::Read)?;
    if now.effective.contains(SETPCAP) {
        for cap in 0..=MAX_CAP {
            let one = CapabilitySet::from_bits_retain(1 << cap);
            if keep.contains(one) {
                continue;
            }
            match thread::capability_is_in_bounding_set(one) {
                Ok(true) => thread::remove_capability_from_bounding_set(one)
                    .map_err(|source| PrivilegeError::Bounding { cap, source })?,
                Ok(false) => {}
                // EINVAL: past the kernel's last capability.
                Err(_) => break,
            }
        }
    }
    thread::clear_ambient_capability_set().map_err(PrivilegeError::Ambient)?;
    let kept = now.permitted & keep;
    thread::set_capabilities(
        None,
        CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|source| PrivilegeError::Set { keep, source })?;
    thread::set_no_new_privs(true).map_err(PrivilegeError::NoNewPrivs)?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_and_attach_caps_unless_a_port_is_privileged() {
        let base = CapabilitySet::NET_ADMIN | CapabilitySet::SYS_ADMIN | CapabilitySet::SYS_PTRACE;
        assert_eq!(needed(&[4789, 7948, 7947]), base);
        assert_eq!(needed(&[4789, 7948, 80]), base | CapabilitySet::NET_BIND_SERVICE);
        assert_eq!(CapabilitySet::SYS_ADMIN.bits(), 1 << 21);
        assert_eq!(CapabilitySet::SYS_PTRACE.bits(), 1 << 19);
        assert_eq!(
            CapabilitySet::NET_ADMIN.bits(),
            1 << 12,
            "CAP_NET_ADMIN is capability 12"
        );
    }
}
