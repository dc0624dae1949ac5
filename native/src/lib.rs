//! `wecom-relay`, the self-hosted twin: an axum + tokio server around `wecom-relay-core`.
//!
//! The core decides; this crate does I/O, in files named like the Worker's: [`http`] turns axum
//! requests into the core's `Incoming` and its `Answer` back; [`ports`] implements the core's
//! ports (reqwest, the system clock, in-memory stores) as one [`ports::NativePlatform`];
//! [`jobs`] runs accepted jobs in per-user order under a concurrency bound; [`config`] reads
//! `config.yaml` and the environment; [`metrics`] counts the core's events for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use wecom_relay_core::ports::Clock;
use wecom_relay_core::{AgentSettings, Relay, Settings};

pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod ports;

/// The relay over native ports.
pub type NativeRelay = Relay<ports::NativePlatform>;

/// Builds the relay over native ports and starts its job runner (inside a tokio runtime).
pub fn start(
    settings: Settings,
    agent: AgentSettings,
    runtime: &config::RuntimeConfig,
    clock: Arc<dyn Clock>,
) -> Arc<NativeRelay> {
    let metrics = Arc::new(metrics::Metrics::default());
    let (queue, wakeups) = jobs::JobQueue::new(runtime, metrics.clone());
    let agent_timeout = Duration::from_secs(agent.timeout_secs);
    let platform = ports::NativePlatform::new(runtime, agent_timeout, clock, queue, metrics);
    let relay = Arc::new(Relay::new(settings, agent, platform));
    jobs::spawn_runner(relay.clone(), wakeups);
    relay
}
