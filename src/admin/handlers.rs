//! The admin API's request pipeline and handlers: check a parsed request against the listener's rules
//! (Host header, peer credentials, [`Access`]), then serve its [`Endpoint`]. Per-network views are in
//! `networks.rs`, attach/detach in `attach.rs`.
//! Must never: serve a `Privileged` route on TCP, or block the data plane.

use super::http::RawRequest;
use super::routes::route_tail;
use super::{
    find_route, is_loopback_host, parse_request, Access, AdminState, Endpoint, PeerJson, Response, Via,
    ROUTES,
};
use std::time::Instant;

/// What a request gets: one response, or a stream of FDB changes (of network `vni`, or all).
#[derive(Debug)]
pub enum Reply {
    Once(Response),
    FdbWatch { vni: Option<u32> },
}

impl AdminState {
    /// PRIVILEGED (state-changing): revoke node `id` (hex, as in `peers --json`).
    pub async fn revoke(&self, id: &str) -> Response {
        let Ok(node) = id.parse::<control::NodeId>() else {
            return Response::error(
                400,
                "NODE_ID must be the hex id shown by `overlayctl peers --json`",
            );
        };
        let Some(tx) = &self.revoke else {
            return Response::error(409, "static peers cannot be revoked (this overlayd runs without a cluster); remove the --peer on every host instead");
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        if tx.send((node, done)).await.is_err() {
            return Response::error(503, "the control plane has stopped; restart overlayd");
        }
        match tokio::time::timeout(std::time::Duration::from_secs(3), rx).await {
            Ok(Ok(Ok(outcome))) => {
                Response::ok(serde_json::json!({ "node": node.to_string(), "outcome": outcome }).to_string())
            }
            Ok(Ok(Err(e))) => Response::error(409, &e),
            _ => Response::error(503, "the control plane did not answer; retry"),
        }
    }

    /// The whole request pipeline after reading: parse, check the listener's rules, dispatch. A stream
    /// request is answered with an error here: only a connection ([`AdminState::reply`]) can carry one.
    pub async fn respond(&self, via: &Via, raw: &RawRequest) -> Response {
        match self.reply(via, raw).await {
            Reply::Once(r) => r,
            Reply::FdbWatch { .. } => Response::error(
                400,
                "GET /v1/fdb/watch is a stream; read it from the admin listener",
            ),
        }
    }

    /// [`AdminState::respond`], or the start of a stream for `GET /v1/fdb/watch` (same access rules as `/v1/fdb`).
    pub async fn reply(&self, via: &Via, raw: &RawRequest) -> Reply {
        let req = match parse_request(&raw.head) {
            Ok(r) => r,
            Err(e) => return Reply::Once(Response::error(e.status(), &e.to_string())),
        };
        if let Via::Socket { refused: Some(why) } = via {
            return Reply::Once(Response::error(403, why));
        }
        if *via == Via::Tcp {
            match req.host {
                Some(h) if is_loopback_host(h) => {}
                Some(h) => {
                    return Reply::Once(Response::error(
                        403,
                        &format!("Host {h:?} is not a loopback name: the admin endpoint answers only requests for localhost, 127.0.0.1 or [::1] (DNS rebinding protection)"),
                    ))
                }
                None if req.http10 => {}
                None => return Reply::Once(Response::error(400, "HTTP/1.1 request without a Host header")),
            }
        }
        let route = match find_route(req.method, req.path) {
            Ok(r) => r,
            Err(404) => {
                let paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
                return Reply::Once(Response::error(
                    404,
                    &format!("no such route; try {}", paths.join(", ")),
                ));
            }
            Err(status) => return Reply::Once(Response::error(status, "method not allowed on this route")),
        };
        if route.access == Access::Privileged && *via == Via::Tcp {
            let sock = self.socket_path.display();
            return Reply::Once(Response::error(
                403,
                &format!(
                    "{} {} is served only on overlayd's admin socket {sock} (root only), never on the TCP admin address: run `overlayctl --admin-socket {sock} …` as root",
                    route.method.as_str(),
                    route.path
                ),
            ));
        }
        if route.endpoint == Endpoint::FdbWatch {
            return match self.select(req.query) {
                Ok((nets, all)) => Reply::FdbWatch {
                    vni: (!all).then(|| nets.first().map(|n| n.vni.get())).flatten(),
                },
                Err(r) => Reply::Once(r),
            };
        }
        let tail = route_tail(route.path, req.path);
        Reply::Once(self.dispatch(route.endpoint, tail, req.query, &raw.body).await)
    }

    /// Serve one endpoint; `tail` is what a `*` route matched. Access has been checked by the caller.
    pub async fn dispatch(&self, endpoint: Endpoint, tail: &str, query: &str, body: &[u8]) -> Response {
        let now = Instant::now();
        let json = |r: Result<String, serde_json::Error>| match r {
            Ok(body) => Response::ok(body),
            Err(e) => Response::error(500, &e.to_string()),
        };
        match endpoint {
            Endpoint::Health => Response::ok("{\"ok\":true}".into()),
            Endpoint::Fdb => match self.fdb_json(query, now) {
                Ok(rows) => json(serde_json::to_string(&rows)),
                Err(r) => r,
            },
            Endpoint::FdbWatch => Response::error(
                400,
                "GET /v1/fdb/watch is a stream; read it from the admin listener",
            ),
            Endpoint::Networks => json(serde_json::to_string(&self.networks_json())),
            Endpoint::NetworkCreate => self.network_create(body).await,
            Endpoint::NetworkRemove => self.network_remove(tail, query).await,
            Endpoint::Attach => self.attach(body).await,
            Endpoint::Detach => self.detach(body).await,
            Endpoint::Attachments => self.attachments_json(),
            Endpoint::Stats => {
                let mut v = match self.stats_json(query) {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let control = self.control_stats.read().ok().and_then(|c| *c);
                if let (Some(obj), Some(c)) = (v.as_object_mut(), control) {
                    obj.insert("control".into(), serde_json::to_value(c).unwrap_or_default());
                }
                if let (Some(q), Some(obj)) = (&self.quic, v.as_object_mut()) {
                    obj.insert("quic".into(), serde_json::json!(q.snapshot()));
                }
                json(serde_json::to_string(&v))
            }
            Endpoint::Revoke => {
                let node = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["node"].as_str().map(str::to_string));
                match node {
                    Some(id) => self.revoke(&id).await,
                    None => Response::error(400, "body must be {\"node\": \"<id as in peers --json>\"}"),
                }
            }
            Endpoint::Peers => {
                let members = self.members.read().ok().and_then(|m| m.clone());
                if let Some(rows) = members {
                    let rows = serde_json::to_value(rows)
                        .ok()
                        .and_then(|v| v.as_array().cloned())
                        .unwrap_or_default();
                    return match self.with_network_column(rows, query) {
                        Ok(r) => json(serde_json::to_string(&r)),
                        Err(r) => r,
                    };
                }
                let peers: Vec<PeerJson> = self
                    .peers
                    .snapshot()
                    .iter()
                    .map(|a| {
                        let (last_seen_s, state) = self.observe.static_peer_state(*a, now);
                        PeerJson {
                            id: a.to_string(),
                            addr: *a,
                            vtep: *a,
                            state,
                            generation: 0,
                            last_seen_s: last_seen_s.map(|s| (s * 10.0).round() / 10.0),
                        }
                    })
                    .collect();
                let rows = serde_json::to_value(peers)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default();
                match self.with_network_column(rows, query) {
                    Ok(r) => json(serde_json::to_string(&r)),
                    Err(r) => r,
                }
            }
            Endpoint::Metrics => match crate::metrics::render(self) {
                Ok(text) => Response::ok_as(crate::metrics::CONTENT_TYPE, text),
                Err(e) => Response::error(500, &format!("cannot encode metrics: {e}")),
            },
            Endpoint::Trace => match crate::trace::trace(self, query) {
                Ok(t) => json(serde_json::to_string(&t)),
                Err(e) => Response::error(400, &e.to_string()),
            },
            Endpoint::Diag => json(serde_json::to_string(&self.diag())),
            Endpoint::Token => match &self.admission {
                Some(a) => json(serde_json::to_string(
                    &serde_json::json!({ "token": a.token().to_string() }),
                )),
                None => self.not_admitter(),
            },
            Endpoint::TokenRotate => match &self.admission {
                Some(a) => match a.rotate() {
                    Ok(t) => {
                        tracing::info!("join secret rotated; the previous token is no longer accepted");
                        json(serde_json::to_string(
                            &serde_json::json!({ "token": t.to_string() }),
                        ))
                    }
                    Err(e) => Response::error(500, &e.to_string()),
                },
                None => self.not_admitter(),
            },
        }
    }

    /// Run every `diag` check; peers are probed in parallel. Blocks this runtime worker (probes wait for
    /// replies), which a multi-thread runtime is told about.
    fn diag(&self) -> crate::diag::Report {
        let run = || {
            let mut checks = crate::diag::host_checks(self);
            let targets = crate::diag::probe_targets(self);
            let per_peer: Vec<Vec<crate::diag::Check>> = std::thread::scope(|s| {
                let hs: Vec<_> = targets
                    .iter()
                    .map(|p| s.spawn(move || crate::diag::peer_checks(self, *p)))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
            });
            checks.extend(per_peer.into_iter().flatten());
            checks.extend(crate::diag::liveness_checks(self));
            crate::diag::report(checks)
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// `token` and `token --rotate` on a node that is not an admitter: name the admitters it knows.
    fn not_admitter(&self) -> Response {
        if self.is_static() {
            return Response::error(
                404,
                "this overlayd runs in static mode (no cluster), so there is no join token: start the first node with --init-cluster",
            );
        }
        let admitters: Vec<String> = self
            .cluster_state
            .as_ref()
            .and_then(|s| s.load_admitters().ok())
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let named = if admitters.is_empty() {
            "the node started with --init-cluster".to_string()
        } else {
            format!("gossip address {}", admitters.join(", "))
        };
        Response::error(
            409,
            &format!("this node is not an admitter (it holds no CA key or join secret); run `overlayctl --admin-socket … token` on an admitter: {named}"),
        )
    }

    fn is_static(&self) -> bool {
        // The state dir is there from the start in cluster mode; the member list only after the first
        // membership event, which may come after the admin socket answers.
        self.cluster_state.is_none() && self.members.read().map_or(true, |m| m.is_none())
    }
}
