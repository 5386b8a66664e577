//! `GET /v1/fdb/watch` on a connection: the response head, the baseline, then one JSON line per FDB change
//! until the client closes (see `watch.rs` for where the events come from).
//! Must never: wait on a client without a deadline. A write the client does not take within
//! `Limits::write_timeout` closes the stream; a `heartbeat` line every [`HEARTBEAT`] makes sure a write is
//! pending now and then even on a quiet table, so a non-reading client is dropped once the socket buffers
//! are full (with heartbeats alone that takes hours: the per-listener caps keep the socket's places free).
//! A client that falls more than `watch::RING` events behind gets a `lost` line and a new baseline instead
//! of the events it missed.

use super::http::{write_response, Limits, Response};
use super::watch::{unix_us, FdbEvent, FdbWatch, Listener, Subscription};
use super::AdminState;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";

/// Events written per write call at most (one line each).
const BATCH: usize = 256;
/// A `{"event":"heartbeat","ts_us":…}` line this often, whatever else was sent.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// Serve the stream on `s` (which came in on `on`) until the client closes, stalls past the write
/// deadline, or the feed stops.
pub(super) async fn fdb_watch<S>(s: S, state: &AdminState, vni: Option<u32>, limits: &Limits, on: Listener)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve(s, state, vni, limits, on, HEARTBEAT).await;
}

/// Start (or restart) a subscription on a blocking thread: an idle feed reads every table first.
async fn blocking<T: Send + 'static>(
    w: &Arc<FdbWatch>,
    f: impl FnOnce(&FdbWatch) -> T + Send + 'static,
) -> Option<T> {
    let w = w.clone();
    tokio::task::spawn_blocking(move || f(&w)).await.ok()
}

/// [`fdb_watch`] with a heartbeat every `beat` (tests use a short one).
pub(super) async fn serve<S>(
    mut s: S,
    state: &AdminState,
    vni: Option<u32>,
    limits: &Limits,
    on: Listener,
    beat: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut sub) = blocking(&state.fdb_watch, move |w| w.subscribe(on))
        .await
        .flatten()
    else {
        let msg = format!(
            "too many FDB watchers at once on this listener (at most {}); retry later",
            on.cap()
        );
        write_response(&mut s, &Response::error(503, &msg), limits).await;
        return;
    };
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut rd, mut wr) = tokio::io::split(s);
    let mut buf = String::with_capacity(4096);
    buf.push_str(std::str::from_utf8(HEAD).unwrap_or_default());
    loop {
        baseline(&mut buf, &sub, vni);
        if !flush(&mut wr, &mut buf, limits).await {
            return;
        }
        // Events until the reader falls behind (then a new baseline) or goes.
        loop {
            let first = tokio::select! {
                r = sub.rx.recv() => r,
                () = closed(&mut rd) => return,
                _ = heartbeat.tick() => {
                    buf.push_str(&serde_json::json!({"event": "heartbeat", "ts_us": unix_us()}).to_string());
                    buf.push('\n');
                    if !flush(&mut wr, &mut buf, limits).await {
                        return;
                    }
                    continue;
                }
            };
            let lost = match first {
                Ok(e) => {
                    push(&mut buf, &e, vni);
                    // Take what else is queued now, so a burst is one write.
                    let mut lost = None;
                    for _ in 1..BATCH {
                        match sub.rx.try_recv() {
                            Ok(e) => push(&mut buf, &e, vni),
                            Err(TryRecvError::Lagged(n)) => {
                                lost = Some(n);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    lost
                }
                Err(RecvError::Lagged(n)) => Some(n),
                Err(RecvError::Closed) => return,
            };
            if let Some(n) = lost {
                buf.push_str(
                    &serde_json::json!({"event": "lost", "count": n, "ts_us": unix_us()}).to_string(),
                );
                buf.push('\n');
                match blocking(&state.fdb_watch, move |w| w.resync(sub)).await {
                    Some(s) => sub = s,
                    None => return,
                }
                break;
            }
            if !flush(&mut wr, &mut buf, limits).await {
                return;
            }
        }
    }
}

fn baseline(buf: &mut String, sub: &Subscription, vni: Option<u32>) {
    for e in &sub.baseline {
        push(buf, e, vni);
    }
    buf.push_str(&serde_json::json!({"event": "synced", "seq": sub.seq, "ts_us": sub.ts_us}).to_string());
    buf.push('\n');
}

fn push(buf: &mut String, e: &FdbEvent, vni: Option<u32>) {
    if vni.is_some_and(|v| v != e.vni) {
        return;
    }
    if let Ok(line) = serde_json::to_string(e) {
        buf.push_str(&line);
        buf.push('\n');
    }
}

/// Write and clear `buf` within the write deadline; false if the client did not take it.
async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, buf: &mut String, limits: &Limits) -> bool {
    if buf.is_empty() {
        return true;
    }
    let ok = tokio::time::timeout(limits.write_timeout, async {
        wr.write_all(buf.as_bytes()).await?;
        wr.flush().await
    })
    .await
    .is_ok_and(|r| r.is_ok());
    buf.clear();
    ok
}

/// Returns when the client has closed its side (or the connection failed); what it sends is discarded.
async fn closed<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut sink = [0u8; 256];
    loop {
        match rd.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
