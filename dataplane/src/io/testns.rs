//! Test helper: run a closure in a fresh network namespace on its own thread (netns is per-thread), so
//! tests can create links and send traffic without touching the host or each other.

/// Run `f` in a new thread inside a new network namespace with `lo` up. Panics in `f` propagate.
pub(crate) fn in_netns<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it only changes this thread's namespace membership, and
        // this thread is dedicated to the test and ends with it (the namespace dies with it).
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed (tests need root): {}",
            std::io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        f()
    });
    match handle.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Run `ip ARGS` (iproute2) in the calling thread's network namespace (a child process inherits it, so this
/// works inside [`in_netns`]) and panic with its output if it fails. Test-only: the daemon never runs `ip`.
pub(crate) fn ip(args: &[&str]) {
    let out = ip_output(args);
    assert!(out.status.success(), "ip {}: {out:?}", args.join(" "));
}

fn ip_output(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("these tests need the `ip` command (apt-get install iproute2): {e}"))
}

/// Whether link `name` exists (`ip link show NAME` succeeds).
pub(crate) fn link_exists(name: &str) -> bool {
    ip_output(&["link", "show", name]).status.success()
}

/// `ip link set NAME up`.
pub(crate) fn set_up(name: &str) {
    ip(&["link", "set", name, "up"]);
}

/// `ip link set NAME mtu MTU`.
pub(crate) fn set_mtu(name: &str, mtu: u32) {
    ip(&["link", "set", name, "mtu", &mtu.to_string()]);
}

/// `ip addr add ADDR/PREFIX dev NAME`.
pub(crate) fn add_address(name: &str, addr: std::net::IpAddr, prefix: u8) {
    ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", name]);
}

/// `ip link del NAME`.
pub(crate) fn delete_link(name: &str) {
    ip(&["link", "del", name]);
}

/// `ip link add NAME type bridge`, then up.
pub(crate) fn add_bridge(name: &str) {
    ip(&["link", "add", name, "type", "bridge"]);
    set_up(name);
}

/// Counts heap allocations made by the current thread, so tests can prove the hot path allocates nothing.
/// (A global allocator is per binary: this one wraps `System` and only adds a thread-local counter.)
pub(crate) mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) struct Counting;

    // SAFETY: forwards every call unchanged to the system allocator; the counter is a const-initialised
    // thread-local Cell without destructor, so touching it never allocates or recurses.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations (and reallocations) made so far by this thread.
    pub(crate) fn allocations() -> u64 {
        ALLOCS.try_with(|c| c.get()).unwrap_or(0)
    }
}

/// Linux capability numbers (linux/capability.h) used by the permission tests.
pub(crate) const CAP_NET_BIND_SERVICE: u32 = 10;
pub(crate) const CAP_NET_ADMIN: u32 = 12;

/// Drop `caps` from the calling thread's effective and permitted sets (capabilities are per thread, so
/// this only affects the test's own netns thread). Lets tests check the "permission denied" messages.
pub(crate) fn drop_caps(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header reads two `Data` entries into `data`, which is exactly that size.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    for &cap in caps {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
    }
    // SAFETY: capset reads the header and two `Data` entries; pid 0 means the calling thread only.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}
