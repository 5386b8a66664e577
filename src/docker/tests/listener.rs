//! Where the plugin listens (`--docker-plugin` addresses), the HTTP heads it accepts, and a request
//! served over TCP.

use super::*;
use crate::docker::listen::route;
use std::sync::Arc;

#[test]
fn addresses_parse() {
    use listen::AddrError;
    assert_eq!(
        DEFAULT_DOCKER_PLUGIN.parse::<DockerAddr>().unwrap(),
        DockerAddr::Unix("/run/docker/plugins/overlayd.sock".into())
    );
    assert_eq!(
        "tcp:127.0.0.1:7950".parse::<DockerAddr>().unwrap(),
        DockerAddr::Tcp("127.0.0.1:7950".parse().unwrap())
    );
    assert_eq!(
        "tcp:[::1]:7950".parse::<DockerAddr>().unwrap(),
        DockerAddr::Tcp("[::1]:7950".parse().unwrap())
    );
    assert!(matches!(
        "tcp:0.0.0.0:7950".parse::<DockerAddr>(),
        Err(AddrError::NotLoopback(_))
    ));
    assert!(matches!(
        "tcp:10.0.0.1:7950".parse::<DockerAddr>(),
        Err(AddrError::NotLoopback(_))
    ));
    assert!(matches!(
        "tcp:127.0.0.1:0".parse::<DockerAddr>(),
        Err(AddrError::NotLoopback(_))
    ));
    assert!(matches!(
        "tcp:127.0.0.1".parse::<DockerAddr>(),
        Err(AddrError::Syntax(_))
    ));
    assert!(matches!(
        "unix:relative.sock".parse::<DockerAddr>(),
        Err(AddrError::Path(_))
    ));
    assert!(matches!(
        format!("unix:/{}", "a".repeat(200)).parse::<DockerAddr>(),
        Err(AddrError::Path(_))
    ));
    assert!(matches!(
        "/run/x.sock".parse::<DockerAddr>(),
        Err(AddrError::Syntax(_))
    ));
    assert!(matches!("".parse::<DockerAddr>(), Err(AddrError::Syntax(_))));
    let a: DockerAddr = "tcp:127.0.0.1:7950".parse().unwrap();
    assert_eq!(a.spec_url(), "tcp://127.0.0.1:7950");
    assert_eq!(a.to_string(), "tcp:127.0.0.1:7950");
    assert_eq!(a.to_string().parse::<DockerAddr>().unwrap(), a);
    let u: DockerAddr = "unix:/run/docker/plugins/o.sock".parse().unwrap();
    assert_eq!(u.spec_url(), "unix:///run/docker/plugins/o.sock");
}

#[test]
fn http_heads_are_checked() {
    assert_eq!(
        route(
            b"POST /NetworkDriver.Join HTTP/1.1\r\nHost: 127.0.0.1:7950\r\nContent-Length: 2\r\n\r\n",
            true
        )
        .unwrap(),
        "/NetworkDriver.Join"
    );
    assert_eq!(
        route(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n\r\n", false).unwrap(),
        "/Plugin.Activate"
    );
    assert_eq!(
        route(b"GET /Plugin.Activate HTTP/1.1\r\n\r\n", false)
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        route(
            b"POST /Plugin.Activate HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            true
        )
        .unwrap_err()
        .status,
        403
    );
    let e = route(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap_err();
    assert_eq!(e.status, 501);
    assert!(e.body.contains("Err"), "{}", e.body);
    assert_eq!(route(b"garbage\r\n\r\n", false).unwrap_err().status, 400);
}

#[tokio::test]
async fn serves_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let d = Arc::new(driver());
    let task = tokio::spawn(listen::serve(listen::Listener::Tcp(l), d));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST /Plugin.Activate HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.ends_with(r#"{"Implements":["NetworkDriver","IpamDriver"]}"#),
        "{out}"
    );
    task.abort();
}
