//! `wecom-relay`, the self-hosted twin: an axum + tokio server around `wecom-relay-core`.
//!
//! The core decides; this crate does I/O. [`relay::Relay`] wires the core's pipeline to native
//! ports (reqwest, the system clock, in-memory stores) and a per-user ordered job queue;
//! [`server::app`] is the HTTP surface; [`standin`] is a local stand-in for WeCom's server API
//! that `demo` and the tests use.

pub mod config;
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod openai_standin;
pub mod platform;
pub mod relay;
pub mod server;
pub mod standin;
