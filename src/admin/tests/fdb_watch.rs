//! `GET /v1/fdb/watch` over real connections: lost/rebaseline, write deadline, heartbeats, access rules.

use super::*;

/// Reads lines of a watch stream until `done` holds for the lines so far (5 s at most).
async fn lines_until(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !done(&lines) {
            let mut l = String::new();
            if r.read_line(&mut l).await.unwrap_or(0) == 0 {
                break;
            }
            lines.push(l.trim_end().to_string());
        }
    })
    .await;
    lines
}

/// State whose watch feed keeps a ring of 4 events (a reader that does not read loses events after a
/// handful of changes), and its one FDB.
fn ring_of_4() -> (Arc<AdminState>, Arc<dataplane::fdb::Fdb>) {
    let mut st = state(None, false);
    st.fdb_watch = watch::FdbWatch::with_ring(st.table.clone(), 4);
    let fdb = st.table.snapshot()[0].fdb.clone();
    (Arc::new(st), fdb)
}

/// `n` control installs (6 MACs moving between VTEPs), each passed to the watch feed.
async fn churn(st: &AdminState, fdb: &dataplane::fdb::Fdb, n: u8) {
    for m in 0..n {
        fdb.install_control(
            MacAddr([2, 0, 0, 0, 1, m % 6]),
            IpAddr::from([10, 0, 0, 3 + m / 6]),
            Instant::now(),
        );
        st.fdb_watch.pass();
        tokio::task::yield_now().await;
    }
}

#[test]
fn fdb_watch_streams_changes_and_a_reader_that_falls_behind_is_told_then_rebaselined() {
    let (st, fdb) = ring_of_4();
    rt().block_on(async {
        // 512 bytes of pipe: the writer blocks after two or three lines while nobody reads.
        let (client, server) = tokio::io::duplex(512);
        let limits = Limits::default();
        let st2 = st.clone();
        let task = tokio::spawn(async move {
            super::stream::fdb_watch(server, &st2, None, &limits, watch::Listener::Tcp).await
        });
        let mut r = tokio::io::BufReader::new(client);
        let head = lines_until(&mut r, |l| l.iter().any(|l| l.contains("\"synced\""))).await;
        assert_eq!(head[0], "HTTP/1.1 200 OK", "{head:?}");
        assert!(
            head.iter()
                .any(|l| l.contains("\"present\"") && l.contains("02:00:00:00:00:02")),
            "the baseline holds the table: {head:?}"
        );
        // 40 changes while the reader reads nothing: every FDB call returns (the data path never waits for a
        // reader), the feed keeps at most 4 of them.
        churn(&st, &fdb, 40).await;
        let after = lines_until(&mut r, |l| {
            l.iter()
                .position(|l| l.contains("\"lost\""))
                .is_some_and(|p| l[p..].iter().any(|l| l.contains("\"synced\"")))
        })
        .await;
        let lost = after
            .iter()
            .position(|l| l.contains("\"lost\""))
            .unwrap_or_else(|| panic!("no lost line: {after:?}"));
        assert!(
            after[..lost]
                .iter()
                .any(|l| l.contains("\"update\"") || l.contains("\"add\"")),
            "{after:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&after[lost]).unwrap();
        assert!(v["count"].as_u64().unwrap() > 0, "{v}");
        // After `lost`: the table again (every row of it), then `synced`.
        let rows = fdb.rows(Instant::now()).len();
        let present = after[lost..].iter().filter(|l| l.contains("\"present\"")).count();
        assert_eq!(present, rows, "{after:?}");
        // Then changes flow again.
        fdb.remove_control(&MacAddr([2, 0, 0, 0, 1, 0]));
        st.fdb_watch.pass();
        let more = lines_until(&mut r, |l| l.iter().any(|l| l.contains("\"remove\""))).await;
        assert!(
            more.iter()
                .any(|l| l.contains("\"remove\"") && l.contains("02:00:00:00:01:00")),
            "{more:?}"
        );
        drop(r);
        // The reader gone, the stream ends (its slot is freed).
        assert!(
            tokio::time::timeout(Duration::from_secs(2), task).await.is_ok(),
            "stream task ended"
        );
    });
}

#[test]
fn fdb_watch_drops_a_reader_that_takes_nothing_within_the_write_deadline() {
    let (st, fdb) = ring_of_4();
    rt().block_on(async {
        let (client, server) = tokio::io::duplex(256);
        let limits = Limits {
            write_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let st2 = st.clone();
        let task = tokio::spawn(async move {
            super::stream::fdb_watch(server, &st2, None, &limits, watch::Listener::Tcp).await
        });
        churn(&st, &fdb, 20).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(3), task).await.is_ok(),
            "a stalled reader is dropped after the write deadline"
        );
        drop(client);
        // Its place is given back: the whole TCP cap can be taken again, and no more.
        let all: Vec<_> = (0..watch::MAX_TCP_WATCHERS)
            .map(|_| st.fdb_watch.subscribe(watch::Listener::Tcp))
            .collect();
        assert!(
            all.iter().all(Option::is_some),
            "the stalled reader's place was freed"
        );
        assert!(
            st.fdb_watch.subscribe(watch::Listener::Tcp).is_none(),
            "the cap holds"
        );
    });
}

#[test]
fn fdb_watch_sends_heartbeats_so_a_silent_reader_of_a_quiet_table_is_dropped() {
    let st = Arc::new(state(None, false));
    rt().block_on(async {
        let limits = Limits {
            write_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let beat = Duration::from_millis(20);
        // A reader that reads: heartbeats on a table where nothing happens.
        let (client, server) = tokio::io::duplex(4096);
        let st2 = st.clone();
        let reading = tokio::spawn(async move {
            super::stream::serve(server, &st2, None, &limits, watch::Listener::Tcp, beat).await
        });
        let mut r = tokio::io::BufReader::new(client);
        let lines = lines_until(&mut r, |l| {
            l.iter().filter(|l| l.contains("\"heartbeat\"")).count() >= 2
        })
        .await;
        let beats: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "heartbeat")
            .collect();
        assert!(
            beats.len() >= 2 && beats.iter().all(|v| v["ts_us"].as_u64().is_some()),
            "{lines:?}"
        );
        // A reader that reads nothing of a quiet table: the heartbeats fill its pipe, then the write
        // deadline drops it.
        let (silent, server) = tokio::io::duplex(256);
        let st2 = st.clone();
        let task = tokio::spawn(async move {
            super::stream::serve(server, &st2, None, &limits, watch::Listener::Tcp, beat).await
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(5), task).await.is_ok(),
            "a silent reader of a quiet table is dropped"
        );
        drop((silent, r));
        assert!(tokio::time::timeout(Duration::from_secs(2), reading)
            .await
            .is_ok());
    });
}

#[test]
fn fdb_watch_follows_the_rules_of_fdb() {
    let st = state(None, false);
    assert_eq!(
        find_route(Method::Get, "/v1/fdb/watch").unwrap().access,
        find_route(Method::Get, "/v1/fdb").unwrap().access
    );
    // Same checks as every request on TCP (Host header), same network filter as /v1/fdb.
    let r = get(&st, &Via::Tcp, "/v1/fdb/watch", "evil.example");
    assert_eq!(r.status, 403);
    let r = get(&st, &Via::Tcp, "/v1/fdb/watch?network=nope", "127.0.0.1:7947");
    assert_eq!(r.status, 404);
    let refused = Via::Socket {
        refused: Some("uid 1000 is not allowed".into()),
    };
    assert_eq!(get(&st, &refused, "/v1/fdb/watch", "localhost").status, 403);
    let r = rt().block_on(st.reply(
        &Via::Tcp,
        &raw("GET /v1/fdb/watch?network=42 HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ));
    assert!(matches!(r, Reply::FdbWatch { vni: Some(42) }), "{r:?}");
}

#[test]
fn fdb_watch_a_stalled_reader_of_a_busy_table_is_dropped_and_the_other_reader_misses_nothing() {
    let st = Arc::new(state(None, false));
    let fdb = st.table.snapshot()[0].fdb.clone();
    rt().block_on(async {
        let limits = Limits {
            write_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        // The stalled reader: 512 bytes of pipe, never read (far less than what follows).
        let (stalled, server) = tokio::io::duplex(512);
        let st2 = st.clone();
        let stalled_task = tokio::spawn(async move {
            super::stream::fdb_watch(server, &st2, None, &limits, watch::Listener::Tcp).await
        });
        // The other reader reads everything as it comes.
        let (client, server) = tokio::io::duplex(64 * 1024);
        let st2 = st.clone();
        let _reader_task = tokio::spawn(async move {
            super::stream::fdb_watch(server, &st2, None, &limits, watch::Listener::Socket).await
        });
        let (tx, mut got) = tokio::sync::mpsc::unbounded_channel::<String>();
        let collector = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(client).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // Both subscribed before the flood: each has its baseline (the stalled one's fits in its pipe).
        let mut stalled = tokio::io::BufReader::new(stalled);
        let head = lines_until(&mut stalled, |l| l.iter().any(|l| l.contains("\"synced\""))).await;
        assert!(head.iter().any(|l| l.contains("\"synced\"")), "{head:?}");
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(l) = got.recv().await {
                if l.contains("\"synced\"") {
                    break;
                }
            }
        })
        .await;
        // 3000 events (~500 kB of lines): 500 reads of the table, 6 MACs added then removed in turn.
        let vtep = IpAddr::from([10, 0, 0, 3]);
        for round in 0..500u32 {
            for m in 0..6u8 {
                let mac = MacAddr([2, 0, 0, 0, 1, m]);
                if round % 2 == 0 {
                    fdb.install_control(mac, vtep, Instant::now());
                } else {
                    fdb.remove_control(&mac);
                }
            }
            st.fdb_watch.pass();
            tokio::task::yield_now().await;
        }
        assert!(
            tokio::time::timeout(Duration::from_secs(5), stalled_task)
                .await
                .is_ok(),
            "the stalled reader was dropped at the write deadline"
        );
        // Changes still flow to the other reader after that.
        fdb.install_control(MacAddr([2, 0, 0, 0, 2, 0]), vtep, Instant::now());
        st.fdb_watch.pass();
        let mut events = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(l) = got.recv().await {
                let last = l.contains("02:00:00:00:02:00");
                events.push(l);
                if last {
                    break;
                }
            }
        })
        .await;
        let parsed: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            !parsed.iter().any(|v| v["event"] == "lost"),
            "the reader that kept up lost nothing"
        );
        let changes: Vec<&serde_json::Value> = parsed
            .iter()
            .filter(|v| v["event"] == "add" || v["event"] == "remove")
            .collect();
        assert_eq!(changes.len(), 3001, "every change reached the reader that reads");
        let seqs: Vec<u64> = changes.iter().filter_map(|v| v["seq"].as_u64()).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, none missing"
        );
        drop((stalled, got));
        collector.abort();
    });
}
