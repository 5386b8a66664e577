//! Why a TAP device could not be created, in words that say what to do: [`TapError`], and telling a missing
//! capability from a device node's permissions after a failed open(2) of `/dev/net/tun` (pure, tested on
//! every case without touching the real device).

use super::{CAP_NET_ADMIN, MAX_IFNAME_LEN};
use std::io;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TapError {
    #[error("cannot create TAP device {name}: permission denied (run as root or grant CAP_NET_ADMIN)")]
    Permission { name: String },
    /// EACCES on open(2) although CAP_NET_ADMIN is held: the device node's mode, not the capability.
    #[error(
        "cannot create TAP device {name}: /dev/net/tun (mode {mode:04o}, owner uid {uid} gid {gid}) cannot be \
         opened by uid {euid}; CAP_NET_ADMIN is present, the node's permissions are the problem (restore the \
         kernel's default with `chmod 0666 /dev/net/tun`, or run overlayd as uid {uid})"
    )]
    DevicePermission {
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        euid: u32,
    },
    #[error(
        "cannot create TAP device {name}: /dev/net/tun is missing (load the module with `modprobe tun` \
         or create the node with `mknod /dev/net/tun c 10 200`)"
    )]
    NoTunDevice { name: String },
    #[error("TAP device name {name:?} is too long: at most {MAX_IFNAME_LEN} bytes (IFNAMSIZ-1)")]
    NameTooLong { name: String },
    #[error(
        "TAP device name {name:?} is invalid: it must be non-empty and contain no '/', NUL or whitespace"
    )]
    InvalidName { name: String },
    #[error(
        "cannot create TAP device {name}: the name is used by another device that is not a free TAP \
         (delete it with `ip link del {name}` or choose another name)"
    )]
    Busy { name: String },
    #[error("TAP device {name}: at least one queue is required")]
    NoQueues { name: String },
    #[error(
        "TAP device {name}: the kernel rejected offload flags {flags:#x} (drop the unsupported TUN_F_* \
         flags; USO needs kernel >= 6.2)"
    )]
    OffloadRejected { name: String, flags: u32 },
    #[error("TAP device {name}: offloads need the virtio-net header (create it with vnet_hdr = true)")]
    OffloadNeedsVnetHdr { name: String },
    #[error("TAP device {name}: {op} failed: {source}")]
    Io {
        name: String,
        op: &'static str,
        source: io::Error,
    },
}

/// Owner and permission bits of `/dev/net/tun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The calling process's effective uid and capabilities, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCreds {
    pub euid: u32,
    pub cap_eff: u64,
}

impl ProcessCreds {
    /// `Uid:\t<real>\t<effective>\t…` and `CapEff:\t<hex>`; `None` if either is missing or malformed.
    pub fn parse(status: &str) -> Option<ProcessCreds> {
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let euid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
        let cap_eff = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
        Some(ProcessCreds { euid, cap_eff })
    }

    pub fn has(&self, cap: u32) -> bool {
        cap < 64 && self.cap_eff & (1 << cap) != 0
    }
}

/// Whether this process holds CAP_NET_ADMIN (true when `/proc` cannot tell: the kernel will then say).
pub fn has_cap_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| ProcessCreds::parse(&s))
        .map_or(true, |c| c.has(CAP_NET_ADMIN))
}

/// What a failed open(2) of `/dev/net/tun` means. EACCES is a file-permission check (capabilities other than
/// CAP_DAC_OVERRIDE do not bypass it), so with CAP_NET_ADMIN present the node's mode is to blame, not the
/// capability. Pure, so every case is tested without touching the real device.
pub fn open_error(
    name: &str,
    err: io::Error,
    creds: Option<ProcessCreds>,
    node: Option<DeviceNode>,
) -> TapError {
    let name = name.to_owned();
    match (err.raw_os_error(), creds, node) {
        (Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV), _, _) => TapError::NoTunDevice { name },
        (Some(libc::EACCES), Some(c), Some(n)) if c.has(CAP_NET_ADMIN) => TapError::DevicePermission {
            name,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            euid: c.euid,
        },
        (Some(libc::EPERM) | Some(libc::EACCES), _, _) => TapError::Permission { name },
        _ => TapError::Io {
            name,
            op: "open /dev/net/tun",
            source: err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\toverlayd\nUid:\t1000\t1001\t1000\t1000\nGid:\t0\t0\t0\t0\n\
                          CapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";

    #[test]
    fn process_creds_parse() {
        let c = ProcessCreds::parse(STATUS).unwrap();
        assert_eq!(
            c,
            ProcessCreds {
                euid: 1001,
                cap_eff: 0x1000
            }
        );
        assert!(c.has(CAP_NET_ADMIN));
        assert!(!c.has(13) && !c.has(64) && !c.has(200));
        assert_eq!(ProcessCreds::parse("Uid:\t0\t0\t0\t0\n"), None);
        assert_eq!(ProcessCreds::parse("Uid:\t0\nCapEff:\t0\n"), None);
        assert_eq!(ProcessCreds::parse("Uid:\t0\t0\nCapEff:\tzz\n"), None);
        assert_eq!(ProcessCreds::parse(""), None);
    }

    /// Issue 12: a 0600 /dev/net/tun under a capability-granted user gave EACCES and the message blamed the
    /// missing capability.
    #[test]
    fn open_error_tells_device_mode_from_missing_capability() {
        let with_cap = ProcessCreds::parse(STATUS);
        let no_cap = Some(ProcessCreds {
            euid: 1001,
            cap_eff: 0,
        });
        let node = Some(DeviceNode {
            mode: 0o600,
            uid: 0,
            gid: 0,
        });
        let err = |errno| io::Error::from_raw_os_error(errno);

        let e = open_error("ovl1", err(libc::EACCES), with_cap, node);
        assert!(
            matches!(
                e,
                TapError::DevicePermission {
                    mode: 0o600,
                    euid: 1001,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        for part in [
            "mode 0600",
            "uid 1001",
            "CAP_NET_ADMIN is present",
            "chmod 0666 /dev/net/tun",
        ] {
            assert!(msg.contains(part), "{part:?} missing in: {msg}");
        }
        for (errno, creds) in [
            (libc::EACCES, no_cap),
            (libc::EPERM, with_cap),
            (libc::EACCES, None),
        ] {
            let e = open_error("ovl1", err(errno), creds, node);
            assert!(
                matches!(e, TapError::Permission { .. }),
                "{errno} {creds:?}: {e:?}"
            );
            assert!(e.to_string().contains("grant CAP_NET_ADMIN"));
        }
        assert!(matches!(
            open_error("ovl1", err(libc::ENOENT), with_cap, None),
            TapError::NoTunDevice { .. }
        ));
        assert!(matches!(
            open_error("ovl1", err(libc::EMFILE), with_cap, node),
            TapError::Io { .. }
        ));
    }
}
