//! wecom-relay as a Cloudflare Worker: the same core as the native server, with Workers I/O.
//!
//! - `GET`/`POST <path>` and `GET /health`, answered by the core's pipeline.
//! - Access tokens and dedup markers live in the KV namespace bound as `WECOM_RELAY_KV`.
//! - Accepted jobs go to the Queue bound as `WECOM_RELAY_QUEUE` when there is one (its consumer
//!   runs them, with Cloudflare's retries and dead-letter queue); otherwise they run after the
//!   response through `ctx.wait_until`.
//!
//! KV is eventually consistent across locations. For dedup that means two deliveries of one
//! message that land in different locations within about a minute may both pass; WeCom retries
//! go to the same URL within seconds and usually reach the same location. The relay prefers a
//! rare duplicate reply to a lost message: it never treats a KV failure as "already seen".

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]

#[cfg(target_arch = "wasm32")]
mod ports;
#[cfg(target_arch = "wasm32")]
mod runtime;

/// The KV binding for tokens, dedup markers and queued job progress.
pub const KV_BINDING: &str = "WECOM_RELAY_KV";
/// The optional Queue binding.
pub const QUEUE_BINDING: &str = "WECOM_RELAY_QUEUE";
