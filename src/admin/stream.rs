//! `GET /v1/fdb/watch` on a connection: the response head, the baseline, then one JSON line per FDB change
//! until the client closes (see `watch.rs` for where the events come from).
//! Must never: wait on a client without a deadline. A write the client does not take within
//! `Limits::write_timeout` closes the stream; a client that falls more than `watch::RING` events behind
//! gets a `lost` line and a new baseline instead of the events it missed.

use super::http::{write_response, Limits, Response};
use super::watch::{unix_us, FdbEvent, Subscription, MAX_WATCHERS};
use super::AdminState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";

/// Events written per write call at most (one line each).
const BATCH: usize = 256;

/// Serve the stream on `s` until the client closes, stalls past the write deadline, or the feed stops.
pub(super) async fn fdb_watch<S>(mut s: S, state: &AdminState, vni: Option<u32>, limits: &Limits)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut sub) = state.fdb_watch.subscribe() else {
        let msg = format!("too many FDB watchers at once (at most {MAX_WATCHERS}); retry later");
        write_response(&mut s, &Response::error(503, &msg), limits).await;
        return;
    };
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
                sub = state.fdb_watch.resync(sub);
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
