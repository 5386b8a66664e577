//! The admin API's HTTP/1.1 layer: parse one request head, read a bounded body, write one response, close.
//! Hand-rolled on tokio rather than pulling in hyper/axum: the API is a handful of routes with
//! `Connection: close`, and every byte here comes from an untrusted local client, so the parser is small,
//! bounded (head, body, time) and covered by byte-vector and property tests.
//!
//! Must never: allocate without a bound, wait for a client without a deadline, or accept a request it cannot
//! frame unambiguously (`Transfer-Encoding`, duplicate `Content-Length` or `Host` are refused).

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bounds applied to every admin connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once per listener; more are closed at once (TCP: after a best-effort 503).
    pub max_connections: usize,
    /// Request line + headers.
    pub max_head: usize,
    /// Request body (`Content-Length`).
    pub max_body: usize,
    /// The whole request (head and body) must arrive within this; otherwise 408 and close.
    pub request_timeout: Duration,
    /// Writing the response must finish within this.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 32,
            max_head: 8 * 1024,
            max_body: 64 * 1024,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A parsed request head. Borrowed from the bytes read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// Path without the query string.
    pub path: &'a str,
    /// The query string after `?` (empty if none), undecoded.
    pub query: &'a str,
    /// `Host` header value, if any.
    pub host: Option<&'a str>,
    pub content_length: usize,
    /// HTTP/1.0 (where `Host` is optional).
    pub http10: bool,
}

/// Why a request head is refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request")]
    BadRequest,
    #[error("only GET, POST and DELETE are served")]
    Method,
    #[error("Transfer-Encoding is not supported: send a Content-Length")]
    TransferEncoding,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request not received in time")]
    Timeout,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest => 400,
            HttpError::Method => 405,
            HttpError::TransferEncoding => 501,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::Timeout => 408,
        }
    }
}

/// Parse an HTTP/1.x request head (everything up to and including the blank line, or more).
pub fn parse_request(head: &[u8]) -> Result<Request<'_>, HttpError> {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::BadRequest)?;
    let text = std::str::from_utf8(&head[..end]).map_err(|_| HttpError::BadRequest)?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or(HttpError::BadRequest)?;
    let mut parts = line.split(' ');
    let (method, path, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v), None) => (m, p, v),
        _ => return Err(HttpError::BadRequest),
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(HttpError::BadRequest),
    };
    if !path.starts_with('/') {
        return Err(HttpError::BadRequest);
    }
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => return Err(HttpError::Method),
        _ => return Err(HttpError::BadRequest),
    };
    let mut host = None;
    let mut content_length = None;
    for l in lines {
        let (name, value) = l.split_once(':').ok_or(HttpError::BadRequest)?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HttpError::BadRequest);
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if name.eq_ignore_ascii_case("host") {
            if host.replace(value).is_some() {
                return Err(HttpError::BadRequest);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| HttpError::BadRequest)?;
            if content_length.replace(n).is_some() {
                return Err(HttpError::BadRequest);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        }
    }
    Ok(Request {
        method,
        path: path.split('?').next().unwrap_or(path),
        query: path.split_once('?').map_or("", |(_, q)| q),
        host,
        content_length: content_length.unwrap_or(0),
        http10,
    })
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`, with or without
/// a port). A browser tricked by DNS rebinding into calling 127.0.0.1 still sends the attacker's host name,
/// so anything else is refused.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, tail)) if tail.is_empty() || valid_port(tail) => inner,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if valid_port(&format!(":{p}")) => n,
            Some(_) => return false,
            None => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok())
}

/// One response; the body is JSON unless `content_type` says otherwise (metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
}

const JSON: &str = "application/json";

impl Response {
    pub fn ok(body: String) -> Self {
        Response {
            status: 200,
            body,
            content_type: JSON,
        }
    }

    /// 200 with a body of another type (e.g. Prometheus text).
    pub fn ok_as(content_type: &'static str, body: String) -> Self {
        Response {
            status: 200,
            body,
            content_type,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Response {
            status,
            body: serde_json::json!({ "error": message }).to_string(),
            content_type: JSON,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// A request as read off the wire: the head bytes (parse with [`parse_request`]) and the body.
#[derive(Debug)]
pub struct RawRequest {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

/// Read one request (head, then `Content-Length` bytes of body), within `limits`.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S, limits: &Limits) -> Result<RawRequest, HttpError> {
    match tokio::time::timeout(limits.request_timeout, read_inner(s, limits)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout),
    }
}

async fn read_inner<S: AsyncRead + Unpin>(s: &mut S, limits: &Limits) -> Result<RawRequest, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > limits.max_head {
            return Err(HttpError::HeadTooLarge);
        }
        let n = s.read(&mut chunk).await.map_err(|_| HttpError::BadRequest)?;
        if n == 0 {
            return Err(HttpError::BadRequest);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > limits.max_head {
        return Err(HttpError::HeadTooLarge);
    }
    let want = parse_request(&buf[..head_end])?.content_length;
    if want > limits.max_body {
        return Err(HttpError::BodyTooLarge);
    }
    let mut body = buf.split_off(head_end);
    if body.len() > want {
        // Pipelined or trailing bytes: not served (Connection: close).
        body.truncate(want);
    }
    while body.len() < want {
        let n = s.read(&mut chunk).await.map_err(|_| HttpError::BadRequest)?;
        if n == 0 {
            return Err(HttpError::BadRequest);
        }
        let take = n.min(want - body.len());
        body.extend_from_slice(&chunk[..take]);
    }
    Ok(RawRequest { head: buf, body })
}

/// Write `resp` and close the write side, within `limits.write_timeout`. Then discard what the client still
/// sends (at most `max_head + max_body` bytes, within the same deadline): closing a socket with unread data
/// makes the kernel reset the connection, and the client would lose the response explaining the refusal.
pub async fn write_response<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, resp: &Response, limits: &Limits) {
    let bytes = resp.to_bytes();
    let _ = tokio::time::timeout(limits.write_timeout, async {
        s.write_all(&bytes).await?;
        s.shutdown().await?;
        let mut left = limits.max_head + limits.max_body;
        let mut sink = [0u8; 1024];
        while left > 0 {
            let n = s.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = parse_request(b"GET /v1/fdb HTTP/1.1\r\nHost: 127.0.0.1:7947\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Request {
                method: Method::Get,
                path: "/v1/fdb",
                query: "",
                host: Some("127.0.0.1:7947"),
                content_length: 0,
                http10: false
            }
        );
        let r = parse_request(b"GET /v1/stats?x=1 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.path, r.http10, r.host), ("/v1/stats", true, None));
        assert_eq!(r.query, "x=1");
        let r = parse_request(b"POST /v1/x HTTP/1.1\r\nhost:localhost\r\ncontent-length:  12 \r\n\r\nbody")
            .unwrap();
        assert_eq!(
            (r.method, r.host, r.content_length),
            (Method::Post, Some("localhost"), 12)
        );
        assert_eq!(
            parse_request(b"PUT /v1/fdb HTTP/1.1\r\n\r\n"),
            Err(HttpError::Method)
        );
        assert_eq!(parse_request(b"GET /v1/fdb\r\n\r\n"), Err(HttpError::BadRequest));
        assert_eq!(
            parse_request(b"GET /v1/fdb HTTP/2.0\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            parse_request(b"GET v1 HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(parse_request(b"\xff\xfe\r\n\r\n"), Err(HttpError::BadRequest));
        assert_eq!(parse_request(b"GET"), Err(HttpError::BadRequest));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Err(HttpError::BadRequest),
            "no blank line"
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::TransferEncoding)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
            Err(HttpError::BadRequest)
        );
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:7947",
            "127.0.0.1",
            "127.0.0.1:7947",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:7947",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7947",
            "localhost.evil.example",
            "10.0.0.1:7947",
            "0.0.0.0",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "[::1]x",
            "[::2]:1",
            "[::1",
            "localhost:7947:1",
            "::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = parse_request(&data);
        }

        #[test]
        fn host_check_never_panics(s in ".{0,40}") {
            let _ = is_loopback_host(&s);
        }

        /// Every truncation of a valid head is refused or parsed, never a panic; the full one parses.
        #[test]
        fn truncations(cut in 0usize..80) {
            let full = b"POST /v1/token?x HTTP/1.1\r\nHost: [::1]:7947\r\nContent-Length: 3\r\n\r\nabc";
            let r = parse_request(&full[..cut.min(full.len())]);
            if cut >= full.len() - 3 {
                proptest::prop_assert!(r.is_ok());
            }
        }
    }

    /// The README states these defaults.
    #[test]
    fn documented_defaults() {
        let l = Limits::default();
        assert_eq!(
            (l.max_connections, l.max_head, l.max_body, l.request_timeout),
            (32, 8 * 1024, 64 * 1024, Duration::from_secs(5))
        );
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            max_head: 256,
            max_body: 16,
            request_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_millis(200),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reads_head_and_body_within_bounds() {
        rt().block_on(async {
            let (mut c, mut s) = tokio::io::duplex(4096);
            c.write_all(b"POST /v1/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhel")
                .await
                .unwrap();
            let reader = tokio::spawn(async move { read_request(&mut s, &limits()).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(b"loEXTRA").await.unwrap();
            let r = reader.await.unwrap().unwrap();
            assert_eq!(r.body, b"hello");
            assert_eq!(parse_request(&r.head).unwrap().path, "/v1/x");
        });
    }

    #[test]
    fn oversize_and_slow_requests_are_refused() {
        rt().block_on(async {
            // Head larger than max_head, never terminated.
            let (mut c, mut s) = tokio::io::duplex(4096);
            c.write_all(&[b'A'; 300]).await.unwrap();
            assert_eq!(
                read_request(&mut s, &limits()).await.unwrap_err(),
                HttpError::HeadTooLarge
            );
            // Body announced beyond max_body: refused before reading it.
            let (mut c, mut s) = tokio::io::duplex(4096);
            c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(
                read_request(&mut s, &limits()).await.unwrap_err(),
                HttpError::BodyTooLarge
            );
            // A client that sends half a head and stalls: timed out, not waited for forever.
            let (mut c, mut s) = tokio::io::duplex(4096);
            c.write_all(b"GET /v1/fdb HTTP/1.1\r\n").await.unwrap();
            let t = std::time::Instant::now();
            assert_eq!(
                read_request(&mut s, &limits()).await.unwrap_err(),
                HttpError::Timeout
            );
            assert!(t.elapsed() < Duration::from_secs(2));
            // A body that never completes: timed out as well.
            let (mut c, mut s) = tokio::io::duplex(4096);
            c.write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
                .await
                .unwrap();
            assert_eq!(
                read_request(&mut s, &limits()).await.unwrap_err(),
                HttpError::Timeout
            );
            // Closed early.
            let (mut c, mut s) = tokio::io::duplex(4096);
            c.write_all(b"GET / HT").await.unwrap();
            drop(c);
            assert_eq!(
                read_request(&mut s, &limits()).await.unwrap_err(),
                HttpError::BadRequest
            );
        });
    }

    #[test]
    fn response_bytes() {
        let r = Response::error(403, "no \"token\" here");
        let b = String::from_utf8(r.to_bytes()).unwrap();
        assert!(b.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{b}");
        let (_, body) = b.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "no \"token\" here");
    }
}
