//! The admin API's route table: every endpoint, its method and path, and who may call it ([`Access`]).
//! The single place that decides what the TCP listener serves; `overlayctl` reads it too.
//! Must never: mark a route that reveals a secret or changes state as anything but `Access::Privileged`.

use super::Method;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served on the TCP address and the socket: data any local user may read.
    ReadOnly,
    /// Served on the Unix socket only (root): secrets and every state change.
    Privileged,
}

/// What a route does; [`super::AdminState::dispatch`] has one arm per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Fdb,
    /// A stream of FDB changes (`overlayctl fdb --watch`): served by `stream.rs`, not `dispatch`.
    FdbWatch,
    Stats,
    Peers,
    Token,
    Revoke,
    Metrics,
    Trace,
    Diag,
    TokenRotate,
    Networks,
    NetworkCreate,
    NetworkRemove,
    Attach,
    Detach,
    Attachments,
}

/// One row of [`ROUTES`]. A `path` ending in `*` matches every path with that prefix plus a non-empty,
/// slash-free tail (the tail is handed to the endpoint, e.g. a network's name).
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
}

const fn route(method: Method, path: &'static str, endpoint: Endpoint, access: Access) -> Route {
    Route {
        method,
        path,
        endpoint,
        access,
    }
}

/// Every admin endpoint and who may call it: the single place that decides what the TCP listener serves.
/// Add `revoke`, `token --rotate`, `network create/rm`, `attach`/`detach` here as `Access::Privileged`
/// (e.g. `route(Method::Post, "/v1/revoke", Endpoint::Revoke, Access::Privileged)`); `metrics`, `trace`,
/// `diag`, `network ls` as `Access::ReadOnly`. `overlayctl` reads this table too, to tell a user without
/// `--admin-socket` that a command needs it.
pub const ROUTES: &[Route] = &[
    route(Method::Get, "/v1/health", Endpoint::Health, Access::ReadOnly),
    route(Method::Get, "/v1/fdb", Endpoint::Fdb, Access::ReadOnly),
    // Newline-delimited JSON until the client closes: the table (`present` rows, then `synced`), then every
    // change (`add`/`update`/`remove`), `lost` when the reader fell behind (a new baseline follows).
    route(Method::Get, "/v1/fdb/watch", Endpoint::FdbWatch, Access::ReadOnly),
    route(Method::Get, "/v1/stats", Endpoint::Stats, Access::ReadOnly),
    route(Method::Get, "/v1/peers", Endpoint::Peers, Access::ReadOnly),
    route(Method::Get, "/v1/token", Endpoint::Token, Access::Privileged),
    // Body: {"node": "<id as in peers --json>"}.
    route(Method::Post, "/v1/revoke", Endpoint::Revoke, Access::Privileged),
    route(Method::Get, "/metrics", Endpoint::Metrics, Access::ReadOnly),
    route(Method::Get, "/v1/trace", Endpoint::Trace, Access::ReadOnly),
    route(Method::Get, "/v1/diag", Endpoint::Diag, Access::ReadOnly),
    route(Method::Get, "/v1/networks", Endpoint::Networks, Access::ReadOnly),
    // Body: {"name","vni","subnet","mtu"?,"egress"?,"block_prefix"?}; cluster mode only.
    route(
        Method::Post,
        "/v1/networks",
        Endpoint::NetworkCreate,
        Access::Privileged,
    ),
    // `DELETE /v1/networks/NAME[?force=true]`.
    route(
        Method::Delete,
        "/v1/networks/*",
        Endpoint::NetworkRemove,
        Access::Privileged,
    ),
    // `overlayctl token --rotate`: a new join secret on an admitter; the old token is refused from then on.
    route(
        Method::Post,
        "/v1/token/rotate",
        Endpoint::TokenRotate,
        Access::Privileged,
    ),
    // Body: {"netns", "network", "ip"?, "mac"?, "ifname"?} → the attachment (CONTRACT "Admin API").
    route(Method::Post, "/v1/attach", Endpoint::Attach, Access::Privileged),
    // Body: {"netns", "network", "ifname"?} → {"detached": bool}; idempotent.
    route(Method::Post, "/v1/detach", Endpoint::Detach, Access::Privileged),
    route(
        Method::Get,
        "/v1/attachments",
        Endpoint::Attachments,
        Access::Privileged,
    ),
];

/// The route for `method path`; `Err(404)` for an unknown path, `Err(405)` for a known path with another method.
pub fn find_route(method: Method, path: &str) -> Result<&'static Route, u16> {
    let mut known_path = false;
    for r in ROUTES {
        if route_matches(r.path, path) {
            if r.method == method {
                return Ok(r);
            }
            known_path = true;
        }
    }
    Err(if known_path { 405 } else { 404 })
}

fn route_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path
            .strip_prefix(prefix)
            .is_some_and(|tail| !tail.is_empty() && !tail.contains('/')),
        None => pattern == path,
    }
}

/// The tail of `path` matched by a `*` route (`/v1/networks/blue` → `blue`).
pub(super) fn route_tail<'a>(pattern: &str, path: &'a str) -> &'a str {
    pattern
        .strip_suffix('*')
        .and_then(|p| path.strip_prefix(p))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_is_consistent() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with("/v1/") || a.path == "/metrics", "{}", a.path);
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "duplicate {}",
                    a.path
                );
            }
        }
        assert_eq!(
            find_route(Method::Get, "/v1/token").unwrap().access,
            Access::Privileged
        );
        assert_eq!(find_route(Method::Post, "/v1/fdb").unwrap_err(), 405);
        assert_eq!(find_route(Method::Get, "/v2/x").unwrap_err(), 404);
        // `*` routes: one path segment, handed to the endpoint.
        let r = find_route(Method::Delete, "/v1/networks/blue").unwrap();
        assert_eq!(
            (r.endpoint, r.access),
            (Endpoint::NetworkRemove, Access::Privileged)
        );
        assert_eq!(route_tail(r.path, "/v1/networks/blue"), "blue");
        assert_eq!(find_route(Method::Delete, "/v1/networks/").unwrap_err(), 404);
        assert_eq!(find_route(Method::Delete, "/v1/networks/a/b").unwrap_err(), 404);
        assert_eq!(find_route(Method::Get, "/v1/networks/blue").unwrap_err(), 405);
        let r = find_route(Method::Post, "/v1/networks").unwrap();
        assert_eq!(
            (r.endpoint, r.access),
            (Endpoint::NetworkCreate, Access::Privileged)
        );
        assert_eq!(
            find_route(Method::Get, "/v1/networks").unwrap().access,
            Access::ReadOnly
        );
    }
}
