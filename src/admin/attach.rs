//! The attach endpoints of the admin API (issue 10 §3, CONTRACT "Admin API"): `POST /v1/attach`,
//! `POST /v1/detach`, `GET /v1/attachments`. Privileged (Unix socket only). The work is [`crate::ops`]'s.

use super::{AdminState, Response};
use crate::ops::{AttachRequest, DetachRequest, OpsError};

fn ops_error(e: &OpsError) -> Response {
    Response::error(e.http_status(), &e.to_string())
}

fn no_ops() -> Response {
    Response::error(
        503,
        "this overlayd cannot attach namespaces (still starting?): retry in a moment",
    )
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| Response::error(400, &format!("body must be {shape}: {e}")))
}

impl AdminState {
    pub(super) async fn attach(&self, body: &[u8]) -> Response {
        let Some(ops) = &self.ops else { return no_ops() };
        let req: AttachRequest = match parse(
            body,
            r#"{"netns": NAME|PID|PATH, "network": NAME, "ip"?: CIDR, "mac"?: MAC, "ifname"?: NAME}"#,
        ) {
            Ok(r) => r,
            Err(r) => return r,
        };
        match ops.attach(req).await {
            Ok(a) => match serde_json::to_string(&a) {
                Ok(b) => Response::ok(b),
                Err(e) => Response::error(500, &e.to_string()),
            },
            Err(e) => ops_error(&e),
        }
    }

    pub(super) async fn detach(&self, body: &[u8]) -> Response {
        let Some(ops) = &self.ops else { return no_ops() };
        let req: DetachRequest = match parse(
            body,
            r#"{"netns": NAME|PID|PATH, "network": NAME, "ifname"?: NAME}"#,
        ) {
            Ok(r) => r,
            Err(r) => return r,
        };
        match ops.detach(req).await {
            Ok(d) => Response::ok(serde_json::json!({ "detached": d }).to_string()),
            Err(e) => ops_error(&e),
        }
    }

    pub(super) fn attachments_json(&self) -> Response {
        let list = self.ops.as_ref().map(|o| o.attachments()).unwrap_or_default();
        match serde_json::to_string(&list) {
            Ok(b) => Response::ok(b),
            Err(e) => Response::error(500, &e.to_string()),
        }
    }
}
