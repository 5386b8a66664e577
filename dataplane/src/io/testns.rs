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
        super::netlink::set_up("lo").unwrap();
        f()
    });
    match handle.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}
