//! `poll(2)` over a few fds and an eventfd [`Waker`] so another thread can interrupt a worker's poll
//! (shutdown, reconfiguration). Owns no policy: callers decide what to poll and for how long.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `poll(2)` on `fds`; returns how many have events. `EINTR` is reported as `Ok(0)` (a spurious wakeup),
/// so callers can simply loop.
pub fn poll_fds(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call and its length
    // is passed alongside; the kernel writes only `revents` inside it.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// Wait until `fd` is ready for `events` (e.g. `libc::POLLOUT`) or `timeout_ms` passes. Returns whether it
/// became ready.
pub fn wait_fd(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    Ok(poll_fds(&mut pfd, timeout_ms)? > 0 && pfd[0].revents != 0)
}

/// A non-blocking eventfd. Put [`Waker::as_raw_fd`] in a worker's poll set with `POLLIN`; any thread may
/// call [`Waker::wake`] to make that poll return, and the worker calls [`Waker::drain`] after waking.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the return value is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is valid and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Make the eventfd readable. Cannot meaningfully fail: the only possible error is `EAGAIN` when the
    /// counter is saturated, which means the fd is already readable — exactly what a wake wants.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local u64 to an fd we own.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Reset the counter so the fd stops being readable. A no-op when not woken.
    pub fn drain(&self) {
        let mut val: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local u64 from an fd we own. Errors (EAGAIN when not
        // woken) are expected and harmless: one successful read resets an eventfd counter to zero.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut val as *mut u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn waker_interrupts_poll_from_another_thread() {
        let waker = std::sync::Arc::new(Waker::new().unwrap());
        // Not woken: poll times out.
        assert!(!wait_fd(waker.as_raw_fd(), libc::POLLIN, 0).unwrap());
        let w2 = waker.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.wake();
        });
        let start = Instant::now();
        let mut fds = [libc::pollfd {
            fd: waker.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut n = 0;
        while n == 0 && start.elapsed() < Duration::from_secs(5) {
            n = poll_fds(&mut fds, 5000).unwrap();
        }
        assert_eq!(n, 1);
        assert!(fds[0].revents & libc::POLLIN != 0);
        assert!(start.elapsed() < Duration::from_secs(4));
        t.join().unwrap();
        waker.drain();
        assert!(!wait_fd(waker.as_raw_fd(), libc::POLLIN, 0).unwrap());
        // Many wakes coalesce into one drain.
        waker.wake();
        waker.wake();
        waker.drain();
        assert!(!wait_fd(waker.as_raw_fd(), libc::POLLIN, 0).unwrap());
    }
}
