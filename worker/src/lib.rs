//! wecom-relay as a Cloudflare Worker: the same core as the native server, with Workers I/O.
//!
//! Files mirror the native twin's: `http` turns a Workers request into the core's `Incoming`
//! (the body read up to the core's cap) and its `Answer` back; `ports` implements the core's
//! ports as one `WorkerPlatform` (Fetch, KV, Date, setTimeout, Web Crypto); `objects` holds the
//! Durable Objects (a user's jobs worked in order from an alarm, with their memory and send
//! budgets; an app's token fetched once for everyone); `jobs` hands accepted jobs to the
//! user's object when bound, else to the Queue bound as `WECOM_RELAY_QUEUE` (its consumer runs
//! one `Relay::step_job` per delivery, keeping progress in KV), else runs them after the
//! response through `ctx.waitUntil` with `Relay::run_job`.
//!
//! Access tokens, dedup markers and conversations live in the KV namespace bound as
//! `WECOM_RELAY_KV`. KV is eventually consistent across locations. For dedup that means two
//! deliveries of one message that land in different locations within about a minute may both
//! pass; WeCom retries go to the same URL within seconds and usually reach the same location.
//! The relay prefers a rare duplicate reply to a lost message: it never treats a KV failure as
//! "already seen".

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]

#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod jobs;
#[cfg(target_arch = "wasm32")]
mod objects;
#[cfg(target_arch = "wasm32")]
mod ports;

/// The KV binding for tokens, dedup markers, conversations and queued job progress.
pub const KV_BINDING: &str = "WECOM_RELAY_KV";
/// The optional Queue binding.
pub const QUEUE_BINDING: &str = "WECOM_RELAY_QUEUE";

#[cfg(target_arch = "wasm32")]
mod entry {
    use wecom_relay_core::{AgentSettings, RawAgentSettings, RawSettings, Settings};
    use worker::{event, Context, Env, MessageBatch, Request, Response, Result};

    use crate::jobs::Queued;

    fn lookup(env: &Env, name: &str) -> Option<String> {
        env.var(name)
            .map(|v| v.to_string())
            .or_else(|_| env.secret(name).map(|s| s.to_string()))
            .ok()
    }

    /// The relay's and the agent's settings, from vars and secrets, validated by the core.
    /// Errors name the setting, never its value.
    pub(crate) fn load_settings(
        env: &Env,
    ) -> std::result::Result<(Settings, AgentSettings), String> {
        let mut raw = RawSettings::default();
        raw.apply_env(|name| lookup(env, name))
            .map_err(|e| e.to_string())?;
        let mut agent = RawAgentSettings::default();
        agent.apply_env(|name| lookup(env, name));
        let agent = agent.resolve().map_err(|e| e.to_string())?;
        Ok((raw.resolve().map_err(|e| e.to_string())?, agent))
    }

    #[event(fetch)]
    async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
        crate::http::fetch(req, env, ctx).await
    }

    #[event(queue)]
    async fn queue(batch: MessageBatch<Queued>, env: Env, _ctx: Context) -> Result<()> {
        crate::jobs::consume(batch, env).await
    }
}
