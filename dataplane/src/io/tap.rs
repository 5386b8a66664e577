//! TAP devices: `/dev/net/tun` + `TUNSETIFF`, optional virtio-net header and multiqueue, `TUNSETOFFLOAD`.
//! Owns the fds and the raw read/write/writev syscalls; never parses frames (that is `offload`/`engine`).
//! Devices are never made persistent: closing every queue fd (or process death) removes the link.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Size of `struct virtio_net_hdr` that the kernel prepends/expects with `IFF_VNET_HDR`. We never call
/// `TUNSETVNETHDRSZ`, so it stays at the kernel default of 10.
pub use crate::offload::VIRTIO_NET_HDR_LEN as VNET_HDR_LEN;

/// Longest interface name: `IFNAMSIZ` (16) minus the NUL.
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

// linux/if_tun.h offload flags for `TUNSETOFFLOAD`.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_UFO: u32 = 0x10;
/// Kernel >= 6.2.
pub const TUN_F_USO4: u32 = 0x20;
/// Kernel >= 6.2.
pub const TUN_F_USO6: u32 = 0x40;

const TUN_PATH: &[u8] = b"/dev/net/tun\0";
const TUN_PATH_STR: &str = "/dev/net/tun";
/// linux/capability.h: the capability TUNSETIFF and bridge/link changes need.
pub const CAP_NET_ADMIN: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    pub name: String,
    pub vnet_hdr: bool,
    /// Number of queues (fds), at least 1; more than 1 sets `IFF_MULTI_QUEUE`.
    pub queues: usize,
}

mod diagnose;
pub use diagnose::{has_cap_net_admin, open_error, DeviceNode, ProcessCreds, TapError};

/// A TAP device and its queues. Dropping it (with its queues) removes the device.
#[derive(Debug)]
pub struct Tap {
    name: String,
    vnet_hdr: bool,
    /// `TUNSETIFF` flags, kept so [`Tap::reopen`] recreates the same kind of device.
    flags: libc::c_int,
    queues: Vec<TapQueue>,
}

/// One queue (fd) of a TAP device. Non-blocking; give each worker thread its own queue.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
    vnet_hdr: bool,
}

fn validate_name(name: &str) -> Result<(), TapError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(TapError::NameTooLong {
            name: name.to_owned(),
        });
    }
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(TapError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether a link of that name exists in the calling thread's network namespace.
fn name_in_use(name: &str) -> bool {
    let mut buf = [0u8; libc::IFNAMSIZ];
    buf[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `buf` is a NUL-terminated C string (name.len() <= 15 was validated) that outlives the call.
    unsafe { libc::if_nametoindex(buf.as_ptr().cast()) != 0 }
}

impl Tap {
    pub fn create(cfg: &TapConfig) -> Result<Tap, TapError> {
        validate_name(&cfg.name)?;
        if cfg.queues == 0 {
            return Err(TapError::NoQueues {
                name: cfg.name.clone(),
            });
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if cfg.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let existed = name_in_use(&cfg.name);
        let mut queues = Vec::with_capacity(cfg.queues);
        let mut name = cfg.name.clone();
        for _ in 0..cfg.queues {
            let (q, actual) = open_queue(&name, flags, cfg.vnet_hdr, existed)?;
            // The kernel writes back the final name (it expands patterns such as "ovl%d"); later queues
            // must attach to that device.
            name = actual;
            queues.push(q);
        }
        Ok(Tap {
            name,
            vnet_hdr: cfg.vnet_hdr,
            flags,
            queues,
        })
    }

    /// Whether the device is still behind our queues: false once it was deleted under us (`ip link del`),
    /// even if another device has taken its name since (`TUNGETIFF` then fails with `EBADFD`).
    pub fn attached(&self) -> bool {
        let Some(q) = self.queues.first() else {
            return false;
        };
        // SAFETY: ifreq is plain old data; all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // SAFETY: TUNGETIFF writes one `struct ifreq` into the live, exclusively borrowed `ifr`; the fd is ours.
        let rc = unsafe { libc::ioctl(q.fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr as *mut libc::ifreq) };
        rc == 0
    }

    /// Recreate the device after it was deleted under us (`ip link del`), with the same name and flags, behind
    /// the *same* queue descriptors: each queue's fd number is pointed at a new `/dev/net/tun` file with
    /// `dup3`, so threads that hold `&TapQueue` carry on without restarting. A queue of a deleted TAP only
    /// returns `EBADFD` (and polls `POLLERR`) until then.
    ///
    /// Offloads, MTU, master and link state belong to the device: set them again afterwards.
    /// Fails with [`TapError::Busy`] if another device holds the name meanwhile.
    pub fn reopen(&self) -> Result<(), TapError> {
        let existed = name_in_use(&self.name);
        for q in &self.queues {
            let (fresh, _) = open_queue(&self.name, self.flags, self.vnet_hdr, existed)?;
            // SAFETY: both fds are open and owned by live `OwnedFd`s; dup3 atomically makes `q`'s descriptor
            // number refer to the new file (closing the old file behind it), so `q.fd` stays a valid fd that
            // `q` alone owns. `fresh` is closed when dropped; the file lives on behind `q.fd`.
            let rc = unsafe { libc::dup3(fresh.fd.as_raw_fd(), q.fd.as_raw_fd(), libc::O_CLOEXEC) };
            if rc < 0 {
                return Err(TapError::Io {
                    name: self.name.clone(),
                    op: "dup3",
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `TUNSETOFFLOAD`: declare which superframes/partial checksums this side can handle (`TUN_F_*`).
    /// Applies to the whole device. Requires `vnet_hdr`, since offloaded frames are described by it.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        if !self.vnet_hdr && flags != 0 {
            return Err(TapError::OffloadNeedsVnetHdr {
                name: self.name.clone(),
            });
        }
        let Some(q) = self.queues.first() else {
            return Err(TapError::NoQueues {
                name: self.name.clone(),
            });
        };
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long), no pointer; the fd is ours.
        let rc = unsafe { libc::ioctl(q.fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EINVAL) => TapError::OffloadRejected {
                    name: self.name.clone(),
                    flags,
                },
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission {
                    name: self.name.clone(),
                },
                _ => TapError::Io {
                    name: self.name.clone(),
                    op: "TUNSETOFFLOAD",
                    source: err,
                },
            });
        }
        Ok(())
    }

    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// Hand the queues to workers. The device lives as long as any of them is open.
    pub fn into_queues(self) -> Vec<TapQueue> {
        self.queues
    }
}

fn open_queue(
    name: &str,
    flags: libc::c_int,
    vnet_hdr: bool,
    existed: bool,
) -> Result<(TapQueue, String), TapError> {
    // SAFETY: TUN_PATH is a NUL-terminated static string; the return value is checked.
    let raw = unsafe {
        libc::open(
            TUN_PATH.as_ptr().cast(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        let err = io::Error::last_os_error();
        let creds = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| ProcessCreds::parse(&s));
        let node = std::fs::metadata(TUN_PATH_STR).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            DeviceNode {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }
        });
        return Err(open_error(name, err, creds, node));
    }
    // SAFETY: `raw` was just returned by open(2), is valid and owned by nobody else; OwnedFd closes it
    // on every error path below.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: ifreq is plain old data (arrays and a union of integers/pointers); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `ifr` is a live, properly initialised ifreq
    // whose name is NUL-terminated (at most 15 bytes copied into 16 zeroed bytes).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission {
                name: name.to_owned(),
            },
            // EBUSY: a single-queue TAP of that name is already attached; EINVAL: the name belongs to a
            // non-TUN device or a TAP with different flags.
            Some(libc::EBUSY) => TapError::Busy {
                name: name.to_owned(),
            },
            Some(libc::EINVAL) if existed => TapError::Busy {
                name: name.to_owned(),
            },
            _ => TapError::Io {
                name: name.to_owned(),
                op: "TUNSETIFF",
                source: err,
            },
        });
    }
    let actual: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let actual = String::from_utf8(actual).unwrap_or_else(|_| name.to_owned());
    Ok((TapQueue { fd, vnet_hdr }, actual))
}

impl TapQueue {
    /// Read one frame (prefixed by a virtio-net header when [`TapQueue::vnet_hdr`]). Non-blocking:
    /// `ErrorKind::WouldBlock` when no frame is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Write one frame (with its virtio-net header when [`TapQueue::vnet_hdr`]). A TAP whose link is down
    /// returns `EIO`; a full queue returns `WouldBlock`.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid readable region of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// `writev`: one frame gathered from several slices (e.g. a virtio-net header and the frame), no copy.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let cnt = bufs.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
        // SAFETY: std guarantees `IoSlice` is ABI-compatible with `struct iovec` on Unix; the slices it
        // points to are borrowed for the duration of the call and `cnt <= bufs.len()`.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), bufs.as_ptr().cast::<libc::iovec>(), cnt) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests;
