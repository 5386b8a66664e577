//! Background rewrites of one state-dir record (`peers`, `admitters`, `revoked`): one writer per record,
//! the latest value wins.
//!
//! The running node changes these often while a cluster forms (the member set changes once per joiner)
//! and must not wait for the fsyncs. A writer per call (what this replaced) let two rewrites of the same
//! file race: one removed the other's temp file (the rename then failed), or an older value renamed
//! last and stayed. Here a value stored while a write is under way is written once that write is done;
//! values stored meanwhile are skipped for the newest. Must never: write two values of one record at
//! once, or leave an older value on disk after a newer one was stored and written.

use tokio::sync::watch;

use crate::auth::{AuthError, StateDir};

/// How a record is written (a [`StateDir`] method).
pub(crate) type Save<T> = fn(&StateDir, &T) -> Result<(), AuthError>;

/// The writer of one record. Dropping it lets the writer finish the newest stored value, then stop;
/// [`Persist::flush`] waits for that (the daemon's runtime stops right after a leave, which would cancel
/// a write still waiting its turn).
#[derive(Debug)]
pub(crate) struct Persist<T> {
    /// The newest value and its number (1, 2, … per `store`).
    latest: watch::Sender<(u64, Option<T>)>,
    /// The number of the last value whose write finished (or failed).
    written: watch::Receiver<u64>,
}

impl<T: Clone + Send + Sync + 'static> Persist<T> {
    /// Spawn the writer (inside a tokio runtime). `what` names the record in errors.
    pub(crate) fn spawn(state: StateDir, what: &'static str, save: Save<T>) -> Self {
        let (latest, mut rx) = watch::channel((0, None::<T>));
        let (done, written) = watch::channel(0u64);
        tokio::spawn(async move {
            // `changed` still reports a value stored just before the sender was dropped.
            while rx.changed().await.is_ok() {
                let (n, value) = rx.borrow_and_update().clone();
                let Some(value) = value else {
                    continue;
                };
                let state = state.clone();
                match tokio::task::spawn_blocking(move || save(&state, &value)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot persist {what}"),
                    Err(e) => tracing::error!(error = %e, "cannot persist {what}: the writer failed"),
                }
                let _ = done.send(n);
            }
        });
        Persist { latest, written }
    }

    /// Write `value` in the background (after the write under way, if any; superseded by a newer one
    /// stored before it starts).
    pub(crate) fn store(&self, value: T) {
        self.latest.send_modify(|(n, v)| {
            *n += 1;
            *v = Some(value);
        });
    }

    /// Wait until the newest value stored so far has been written (or its write failed, logged).
    pub(crate) async fn flush(&self) {
        let target = self.latest.borrow().0;
        let mut written = self.written.clone();
        // Err: the writer is gone (the runtime is stopping); nothing left to wait for.
        let _ = written.wait_for(|&n| n >= target).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    /// Many values stored back to back (as a forming cluster's member changes are): no write fails
    /// (the racing writers this replaced made renames fail), and the file ends with the newest value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rapid_stores_end_with_the_newest_value_and_no_failed_write() {
        let dir = StateDir::new(crate::auth::tests::tempdir("persist"));
        std::fs::create_dir_all(dir.path()).unwrap();
        static FAILS: AtomicUsize = AtomicUsize::new(0);
        #[allow(clippy::ptr_arg)] // the signature of `Persist<Vec<SocketAddr>>`
        fn save(s: &StateDir, v: &Vec<SocketAddr>) -> Result<(), AuthError> {
            let r = s.save_peers(v);
            if r.is_err() {
                FAILS.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        let p = Persist::spawn(dir.clone(), "peers", save);
        let mut v = Vec::new();
        for i in 1..=200 {
            v.push(addr(i));
            p.store(v.clone());
            if i % 20 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(p);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while dir.load_peers().unwrap_or_default() != v {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the newest value was never written"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(FAILS.load(Ordering::Relaxed), 0, "writes failed");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(dir.path());
    }

    /// A value stored while an earlier (slow) write is under way is on disk once `flush` returns: what a
    /// leave waits for before the daemon's runtime stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_waits_for_a_value_stored_during_a_slow_write() {
        let dir = StateDir::new(crate::auth::tests::tempdir("persist-flush"));
        std::fs::create_dir_all(dir.path()).unwrap();
        #[allow(clippy::ptr_arg)] // the signature of `Persist<Vec<SocketAddr>>`
        fn slow(s: &StateDir, v: &Vec<SocketAddr>) -> Result<(), AuthError> {
            std::thread::sleep(Duration::from_millis(300));
            s.save_peers(v)
        }
        let p = Persist::spawn(dir.clone(), "peers", slow);
        p.flush().await; // nothing stored yet: returns at once
        p.store(vec![addr(1)]);
        tokio::time::sleep(Duration::from_millis(50)).await; // the first write is under way
        p.store(vec![addr(1), addr(2)]);
        p.flush().await;
        assert_eq!(dir.load_peers().unwrap(), vec![addr(1), addr(2)]);
        let _ = std::fs::remove_dir_all(dir.path());
    }
}
