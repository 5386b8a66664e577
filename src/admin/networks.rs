//! The per-network views of the admin API (issue 10 §1): `GET /v1/networks`, and the `?network=NAME` filter
//! and `network` column of `fdb`, `stats` and `peers`.

use super::{AdminState, FdbEntryJson, Response};
use dataplane::network::Network;
use dataplane::stats::{Counters, Snapshot};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// One network as `overlayctl network ls --json` prints it.
pub type NetworkJson = crate::ops::networks::NetworkView;

impl AdminState {
    /// The networks `?network=NAME` selects (all of them without it); 404 naming the served ones.
    pub fn select(&self, query: &str) -> Result<(Vec<Arc<Network>>, bool), Response> {
        let nets = self.table.snapshot();
        match crate::trace::query_param(query, "network") {
            None => Ok((nets.to_vec(), true)),
            Some(name) => match nets
                .iter()
                .find(|n| n.name == name || n.vni.get().to_string() == name)
            {
                Some(n) => Ok((vec![n.clone()], false)),
                None => {
                    let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
                    Err(Response::error(
                        404,
                        &format!(
                            "no network named {name}: this overlayd serves {}",
                            names.join(", ")
                        ),
                    ))
                }
            },
        }
    }

    /// Every counter set of `nets` (both loops and the FDB's), plus the drops of no network if `all`.
    pub fn counters_of(&self, nets: &[Arc<Network>], all: bool) -> Vec<Arc<Counters>> {
        let mut v: Vec<Arc<Counters>> = nets
            .iter()
            .flat_map(|n| {
                n.tx.iter()
                    .chain(n.rx.iter())
                    .cloned()
                    .chain([n.fdb.counters().clone()])
                    .collect::<Vec<_>>()
            })
            .collect();
        if all {
            v.extend(self.table.unattributed_all().iter().cloned());
        }
        v
    }

    pub(super) fn networks_json(&self) -> Vec<NetworkJson> {
        if let Some(ops) = &self.ops {
            return ops.list_networks();
        }
        // Without `ops` (unit tests of the read-only views) there are no blocks either.
        self.observe
            .networks()
            .into_iter()
            .map(|n| NetworkJson::new(n, &[]))
            .collect()
    }

    /// PRIVILEGED: `POST /v1/networks` (cluster mode): define a network cluster-wide.
    pub(super) async fn network_create(&self, body: &[u8]) -> Response {
        let Some(ops) = &self.ops else {
            return Response::error(503, "network operations are not available in this overlayd");
        };
        let req: crate::ops::networks::CreateRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return Response::error(
                    400,
                    &format!("body must be {{\"name\", \"vni\", \"subnet\", \"mtu\"?, \"egress\"?, \"block_prefix\"?}}: {e}"),
                )
            }
        };
        match ops.create_network(req).await {
            Ok(v) => match serde_json::to_string(&v) {
                Ok(b) => Response::ok(b),
                Err(e) => Response::error(500, &e.to_string()),
            },
            Err(e) => Response::error(e.http_status(), &e.to_string()),
        }
    }

    /// PRIVILEGED: `DELETE /v1/networks/NAME[?force=true]`.
    pub(super) async fn network_remove(&self, name: &str, query: &str) -> Response {
        let Some(ops) = &self.ops else {
            return Response::error(503, "network operations are not available in this overlayd");
        };
        let force = crate::trace::query_param(query, "force").is_some_and(|v| v == "true" || v == "1");
        match ops.remove_network(name, force).await {
            Ok(()) => Response::ok(serde_json::json!({ "removed": name }).to_string()),
            Err(e) => Response::error(e.http_status(), &e.to_string()),
        }
    }

    pub(super) fn fdb_json(&self, query: &str, now: Instant) -> Result<Vec<FdbEntryJson>, Response> {
        let (nets, _) = self.select(query)?;
        Ok(nets
            .iter()
            .flat_map(|n| {
                n.fdb.rows(now).into_iter().map(|r| FdbEntryJson {
                    network: n.name.clone(),
                    vni: n.vni.get(),
                    mac: r.mac,
                    vtep: r.vtep,
                    origin: r.origin,
                    age_s: r.age_s,
                })
            })
            .collect())
    }

    /// The counters of the selected networks, summed; `network` names them (`all` without a filter).
    pub(super) fn stats_json(&self, query: &str) -> Result<serde_json::Value, Response> {
        let (nets, all) = self.select(query)?;
        let counters = self.counters_of(&nets, all);
        let mut v = serde_json::to_value(Snapshot::sum(counters.iter().map(|c| &**c)))
            .map_err(|e| Response::error(500, &e.to_string()))?;
        if let Some(obj) = v.as_object_mut() {
            let name = match (all, nets.first()) {
                (false, Some(n)) => n.name.clone(),
                _ => "all".to_string(),
            };
            obj.insert("network".into(), serde_json::Value::String(name));
            obj.insert("workers".into(), workers_json(&nets));
        }
        Ok(v)
    }

    /// `peers` rows with a `network` column: the selected networks whose flood set holds the peer (our own
    /// row, in cluster mode, is kept and names every selected network). A filter keeps only those rows.
    pub(super) fn with_network_column(
        &self,
        rows: Vec<serde_json::Value>,
        query: &str,
    ) -> Result<Vec<serde_json::Value>, Response> {
        let (nets, all) = self.select(query)?;
        let local = self.observe.local;
        let mut out = Vec::with_capacity(rows.len());
        for mut r in rows {
            let vtep = r["vtep"].as_str().and_then(|s| s.parse::<IpAddr>().ok());
            let names: Vec<&str> = nets
                .iter()
                .filter(|n| vtep.is_some_and(|v| v == local || n.peers.snapshot().contains(&v)))
                .map(|n| n.name.as_str())
                .collect();
            if names.is_empty() && !all {
                continue;
            }
            if let Some(o) = r.as_object_mut() {
                o.insert("network".into(), serde_json::Value::String(names.join(",")));
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// `workers` of `/v1/stats` (`--workers`): the traffic each worker carried over the selected networks, one
/// object per worker in worker order. `rx_frames`/`tx_datagrams` were counted by its TX loop (read from its
/// TAP queues, sent to the underlay), `rx_datagrams`/`tx_frames` by its RX loop (received on its UDP socket,
/// written to its TAP queues). Datagrams dropped before their network was known (unknown VNI, too short) count
/// only in the totals, not here.
pub fn workers_json(nets: &[Arc<Network>]) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let n = nets.iter().map(|n| n.tx.len().max(n.rx.len())).max().unwrap_or(0);
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|w| {
            let (mut rx_frames, mut tx_datagrams, mut rx_datagrams, mut tx_frames) = (0, 0, 0, 0);
            for net in nets {
                let (t, r) = (net.tx.of(w), net.rx.of(w));
                rx_frames += t.rx_frames.load(Relaxed);
                tx_datagrams += t.tx_datagrams.load(Relaxed);
                rx_datagrams += r.rx_datagrams.load(Relaxed);
                tx_frames += r.tx_frames.load(Relaxed);
            }
            serde_json::json!({
                "worker": w,
                "rx_frames": rx_frames,
                "tx_datagrams": tx_datagrams,
                "rx_datagrams": rx_datagrams,
                "tx_frames": tx_frames,
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}
