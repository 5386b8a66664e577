//! TAP devices: `/dev/net/tun` + `TUNSETIFF`, optional virtio-net header and multiqueue, `TUNSETOFFLOAD`.
//! Owns the fds and the raw read/write/writev syscalls; never parses frames (that is `offload`/`engine`).
//! Devices are never made persistent: closing every queue fd (or process death) removes the link.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use thiserror::Error;

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
mod tests {
    use super::*;
    use crate::io::poll::poll_fds;
    use crate::io::testns::{self, in_netns};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
    const OUR_IP: [u8; 4] = [10, 77, 0, 2];
    const TAP_IP: [u8; 4] = [10, 77, 0, 1];

    fn arp_request() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&OUR_MAC);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
        f.extend_from_slice(&OUR_MAC);
        f.extend_from_slice(&OUR_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&TAP_IP);
        f
    }

    /// Read frames until an ARP reply for our request shows up (skipping IPv6 RS/MLD etc.).
    fn wait_arp_reply(q: &TapQueue) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let mut fds = [libc::pollfd {
                fd: q.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if poll_fds(&mut fds, 200).unwrap() == 0 {
                continue;
            }
            let n = match q.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("read: {e}"),
            };
            let off = if q.vnet_hdr() { VNET_HDR_LEN } else { 0 };
            let f = &buf[off..n];
            if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0x00, 0x02] {
                return f.to_vec();
            }
        }
        panic!("no ARP reply within 5 s");
    }

    fn arp_roundtrip(vnet_hdr: bool) {
        in_netns(move || {
            let tap = Tap::create(&TapConfig {
                name: "ovltap0".into(),
                vnet_hdr,
                queues: 1,
            })
            .unwrap();
            assert_eq!(tap.name(), "ovltap0");
            let q = &tap.queues()[0];
            assert_eq!(q.vnet_hdr(), vnet_hdr);
            // Nothing queued yet: non-blocking read says so.
            let mut b = [0u8; 2048];
            assert_eq!(q.read(&mut b).unwrap_err().kind(), io::ErrorKind::WouldBlock);

            testns::add_address("ovltap0", IpAddr::V4(Ipv4Addr::from(TAP_IP)), 24);
            testns::set_up("ovltap0");
            let req = arp_request();
            if vnet_hdr {
                let hdr = [0u8; VNET_HDR_LEN];
                let n = q
                    .write_vectored(&[IoSlice::new(&hdr), IoSlice::new(&req)])
                    .unwrap();
                assert_eq!(n, VNET_HDR_LEN + req.len());
            } else {
                assert_eq!(q.write(&req).unwrap(), req.len());
            }
            let reply = wait_arp_reply(q);
            assert_eq!(&reply[0..6], &OUR_MAC, "reply addressed to our MAC");
            assert_eq!(&reply[28..32], &TAP_IP, "sender IP is the TAP's");
            assert_eq!(&reply[32..38], &OUR_MAC, "target MAC is ours");
            assert_eq!(&reply[38..42], &OUR_IP);
        });
    }

    #[test]
    fn arp_reply_without_vnet_hdr() {
        arp_roundtrip(false);
    }

    #[test]
    fn arp_reply_with_vnet_hdr() {
        arp_roundtrip(true);
    }

    #[test]
    fn write_to_down_link_is_eio() {
        in_netns(|| {
            let tap = Tap::create(&TapConfig {
                name: "ovltap4".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap();
            let e = tap.queues()[0].write(&arp_request()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            testns::set_up("ovltap4");
            assert_eq!(tap.queues()[0].write(&arp_request()).unwrap(), 42);
        });
    }

    #[test]
    fn offload_on_vnet_hdr_tap() {
        in_netns(|| {
            let tap = Tap::create(&TapConfig {
                name: "ovltap1".into(),
                vnet_hdr: true,
                queues: 1,
            })
            .unwrap();
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6).unwrap();
            // UDP segmentation offload (kernel >= 6.2), as a virtio device would declare it.
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6)
                .unwrap();
            tap.set_offload(0).unwrap();
            let plain = Tap::create(&TapConfig {
                name: "ovltap2".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap();
            assert!(matches!(
                plain.set_offload(TUN_F_CSUM),
                Err(TapError::OffloadNeedsVnetHdr { .. })
            ));
            // Unknown bits are rejected by the kernel.
            let e = tap.set_offload(TUN_F_CSUM | 0x8000).unwrap_err();
            assert!(
                matches!(e, TapError::OffloadRejected { flags: 0x8001, .. }),
                "{e:?}"
            );
        });
    }

    #[test]
    fn reopen_after_delete_keeps_the_fd() {
        in_netns(|| {
            let tap = Tap::create(&TapConfig {
                name: "ovlre0".into(),
                vnet_hdr: true,
                queues: 1,
            })
            .unwrap();
            let q = &tap.queues()[0];
            let fd = q.as_raw_fd();
            let mut buf = [0u8; 2048];
            assert_eq!(q.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            assert!(tap.attached());
            testns::delete_link("ovlre0");
            assert!(!tap.attached());
            // A queue of a deleted TAP is dead: EBADFD on read, POLLERR on poll (the old busy-loop).
            assert_eq!(q.read(&mut buf).unwrap_err().raw_os_error(), Some(libc::EBADFD));
            tap.reopen().unwrap();
            assert_eq!(q.as_raw_fd(), fd, "same descriptor number");
            assert!(testns::link_exists("ovlre0"));
            assert!(tap.attached());
            assert_eq!(q.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4).unwrap();
            testns::set_up("ovlre0");
            assert_eq!(q.write(&[0u8; VNET_HDR_LEN + 42]).unwrap(), VNET_HDR_LEN + 42);
            // Reopening while the device still exists attaches to nothing new: it is busy (ours).
            assert!(
                matches!(tap.reopen(), Err(TapError::Busy { .. })),
                "reopen of a live TAP"
            );
            drop(tap);
            let deadline = Instant::now() + Duration::from_secs(2);
            while testns::link_exists("ovlre0") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!testns::link_exists("ovlre0"), "still not persistent");
        });
    }

    #[test]
    fn multiqueue_and_removed_on_drop() {
        in_netns(|| {
            let tap = Tap::create(&TapConfig {
                name: "ovlmq0".into(),
                vnet_hdr: true,
                queues: 3,
            })
            .unwrap();
            assert_eq!(tap.queues().len(), 3);
            assert!(testns::link_exists("ovlmq0"));
            // A "%d" pattern is expanded by the kernel and reported back.
            let pat = Tap::create(&TapConfig {
                name: "ovlp%d".into(),
                vnet_hdr: false,
                queues: 2,
            })
            .unwrap();
            assert_eq!(pat.name(), "ovlp0");
            assert!(testns::link_exists("ovlp0"));
            let queues = tap.into_queues();
            assert_eq!(queues.len(), 3);
            drop(queues);
            let deadline = Instant::now() + Duration::from_secs(2);
            while testns::link_exists("ovlmq0") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!testns::link_exists("ovlmq0"), "TAP must not be persistent");
        });
    }

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

    #[test]
    fn permission_error_says_what_to_do() {
        in_netns(|| {
            crate::io::testns::drop_caps(&[crate::io::testns::CAP_NET_ADMIN]);
            let e = Tap::create(&TapConfig {
                name: "ovltap42".into(),
                vnet_hdr: true,
                queues: 1,
            })
            .unwrap_err();
            assert!(matches!(e, TapError::Permission { .. }), "{e:?}");
            assert_eq!(
                e.to_string(),
                "cannot create TAP device ovltap42: permission denied (run as root or grant CAP_NET_ADMIN)"
            );
        });
    }

    #[test]
    fn name_errors() {
        in_netns(|| {
            let e = Tap::create(&TapConfig {
                name: "ovl-name-too-long".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap_err();
            assert!(matches!(e, TapError::NameTooLong { .. }), "{e:?}");
            assert!(e.to_string().contains("at most 15 bytes"), "{e}");
            let e = Tap::create(&TapConfig {
                name: "a/b".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap_err();
            assert!(matches!(e, TapError::InvalidName { .. }), "{e:?}");
            let e = Tap::create(&TapConfig {
                name: "ovl0".into(),
                vnet_hdr: false,
                queues: 0,
            })
            .unwrap_err();
            assert!(matches!(e, TapError::NoQueues { .. }), "{e:?}");
            testns::add_bridge("ovlbr9");
            let e = Tap::create(&TapConfig {
                name: "ovlbr9".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap_err();
            assert!(matches!(e, TapError::Busy { .. }), "{e:?}");
            assert!(e.to_string().contains("ip link del ovlbr9"), "{e}");
            // A single-queue TAP in use cannot be opened a second time.
            let _t = Tap::create(&TapConfig {
                name: "ovltap3".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap();
            let e = Tap::create(&TapConfig {
                name: "ovltap3".into(),
                vnet_hdr: false,
                queues: 1,
            })
            .unwrap_err();
            assert!(matches!(e, TapError::Busy { .. }), "{e:?}");
        });
    }
}
