//! wecom-relay as a Cloudflare Worker. The full relay arrives with its own issue; this crate
//! already builds for `wasm32-unknown-unknown` against workers-rs and the core.

#[cfg(target_arch = "wasm32")]
use worker::{event, Context, Env, Request, Response, Result};

/// Answers `/health`; everything else is not built yet.
#[cfg(target_arch = "wasm32")]
#[event(fetch)]
async fn fetch(req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    match req.path().as_str() {
        "/health" => {
            Response::from_json(&serde_json::json!({"status": "ok", "platform": "wecom_callback"}))
        }
        _ => Response::error("not found", 404),
    }
}
