//! The admin API's listeners: accept loops for the TCP address and the Unix socket, the shared connection
//! cap (503 at once when full) and one task per connection (read, respond, write, close; or stream FDB changes).
//! Must never: hold a task for a refused connection, or wait on a client without the [`Limits`] deadlines.

use super::http::{self, Limits, Response};
use super::{AdminState, PeerPolicy, Reply, Via};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// Serve the TCP admin address until the task is dropped: read-only routes, `Host` checked, bounded.
pub async fn serve_tcp(listener: TcpListener, state: Arc<AdminState>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        match listener.accept().await {
            Ok((s, _)) => admit(&slots, s, &state, Via::Tcp, limits),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serve the admin Unix socket until the task is dropped: every route, for allowed peer credentials only.
pub async fn serve_unix(listener: UnixListener, state: Arc<AdminState>, limits: Limits, policy: PeerPolicy) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let via = Via::Socket {
                    refused: policy.check(&s).err(),
                };
                admit(&slots, s, &state, via, limits);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A stream we can answer without waiting (the 503 of a full listener must not hold a task).
trait TryWrite {
    fn try_write_now(&self, bytes: &[u8]);
}

impl TryWrite for tokio::net::TcpStream {
    fn try_write_now(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

impl TryWrite for tokio::net::UnixStream {
    fn try_write_now(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

/// Serve `s` on its own task if a connection slot is free; otherwise answer 503 at once and close. Shared by
/// both listeners, so the cap tested on the socket is the cap of the TCP address.
fn admit<S>(slots: &Arc<Semaphore>, s: S, state: &Arc<AdminState>, via: Via, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + TryWrite + Unpin + Send + 'static,
{
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        s.try_write_now(&Response::error(503, "too many concurrent admin connections; retry").to_bytes());
        return;
    };
    let st = state.clone();
    tokio::spawn(async move {
        serve_conn(s, &st, via, &limits).await;
        drop(permit);
    });
}

async fn serve_conn<S>(mut s: S, state: &AdminState, via: Via, limits: &Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let resp = match http::read_request(&mut s, limits).await {
        Ok(raw) => match state.reply(&via, &raw).await {
            Reply::Once(r) => r,
            Reply::FdbWatch { vni } => {
                let on = match via {
                    Via::Tcp => super::watch::Listener::Tcp,
                    Via::Socket { .. } => super::watch::Listener::Socket,
                };
                return super::stream::fdb_watch(s, state, vni, limits, on).await;
            }
        },
        Err(e) => Response::error(e.status(), &e.to_string()),
    };
    http::write_response(&mut s, &resp, limits).await;
}
