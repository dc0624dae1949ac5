//! `wecom-relay`, the self-hosted twin: an axum + tokio server around `wecom-relay-core`.
//!
//! The core decides; this crate does I/O, in files named like the Worker's: [`http`] turns axum
//! requests into the core's `Incoming` and its `Answer` back; [`ports`] implements the core's
//! ports (reqwest, the system clock, in-memory stores) as one [`ports::NativePlatform`];
//! [`jobs`] runs accepted jobs in per-user order under a concurrency bound; [`config`] reads
//! `config.yaml` and the environment; [`metrics`] counts the core's events for `/metrics`;
//! [`store`] is the optional durable store (SQLite) behind `relay.state_dir`, and [`shared`]
//! the state several replicas share through Redis behind `relay.redis_url`.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;
use wecom_relay_core::ports::{Clock, StoreError};
use wecom_relay_core::{AgentSettings, Relay, Settings};

pub mod api_check;
pub mod check_config;
pub mod config;
pub mod crypto_cmd;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod ports;
pub mod probe;
pub mod shared;
pub mod store;

/// The relay over native ports.
pub type NativeRelay = Relay<ports::NativePlatform>;

/// Builds the relay over native ports, opens the durable store when `runtime.state_dir` is set
/// (resuming the jobs pending there) or connects to Redis when `runtime.redis_url` is, and
/// starts its job runner (inside a tokio runtime).
pub async fn start(
    settings: Settings,
    agent: AgentSettings,
    runtime: &config::RuntimeConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<NativeRelay>, StoreError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let store = match &runtime.state_dir {
        Some(dir) => Some(store::Store::open(dir)?),
        None => None,
    };
    let pending = match &store {
        Some(store) => store.pending_jobs()?,
        None => Vec::new(),
    };
    let shared = match &runtime.redis_url {
        Some(url) => {
            let lease = Duration::from_secs(runtime.redis_lease_secs);
            Some(shared::Shared::connect(url, lease).await?)
        }
        None => None,
    };
    let (queue, wakeups) =
        jobs::JobQueue::new(runtime, store.clone(), shared.clone(), metrics.clone());
    if !pending.is_empty() {
        info!(
            jobs = pending.len(),
            "resuming jobs pending at the last stop"
        );
    }
    queue.resume(pending);
    let agent_timeout = Duration::from_secs(agent.timeout_secs);
    let backing = match (store, shared) {
        (Some(store), _) => ports::Backing::Durable(store),
        (None, Some(shared)) => ports::Backing::Shared(shared),
        (None, None) => ports::Backing::Memory,
    };
    let platform = ports::NativePlatform::new(
        runtime,
        agent_timeout,
        clock,
        backing,
        queue,
        metrics,
        &settings.media,
    );
    let relay = Arc::new(Relay::new(settings, agent, platform));
    jobs::spawn_runner(relay.clone(), wakeups);
    Ok(relay)
}
