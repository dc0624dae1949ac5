//! The protocol core of wecom-relay: everything the relay decides, with no I/O of its own.
//!
//! It verifies and decrypts WeCom callbacks (WXBizMsgCrypt), parses their XML, routes each one to
//! the app it belongs to, applies the access policy and the replay window, asks the agent, turns
//! WeCom server API calls into request values, splits replies into parts WeCom accepts, and
//! decides when to retry, when to apologise and what to log.
//!
//! It never opens a socket, reads a clock, draws random numbers or spawns a task: those effects
//! go through the small traits in [`ports`], bundled as one [`Platform`]. The native server and
//! the Cloudflare Worker are thin translators around it.
//!
//! # The most important types
//! - [`Relay`], the front door: [`Relay::handle`] answers every HTTP request, and
//!   [`Relay::run_job`] / [`Relay::step_job`] run the work an accepted callback leaves behind.
//! - [`Platform`], what a twin implements once: HTTP, stores, clock, timers, randomness, the job
//!   sink, and [`Platform::observe`], where every [`Event`] becomes a log line and a metric.
//! - [`Incoming`] and [`Answer`], the HTTP request and response as values.
//!
//! # A twin's whole loop
//! ```ignore
//! // At start-up: settings from config.yaml / env / Worker vars, and the twin's ports.
//! let relay = Relay::new(settings, agent_settings, MyPlatform::new(/* ... */));
//! // For each request: read at most MAX_BODY_BYTES, hand it over, write the answer back.
//! let answer = relay.handle(&Incoming { method, path, query, authorization, body }).await;
//! // For each job the sink received, in the background (per user, in order):
//! relay.run_job(&job).await; // or, from a queue that retries: relay.step_job(&job, &mut state)
//! ```
//!
//! The building blocks are public too, for use on their own:
//!
//! ```
//! use wecom_relay_core::crypto::MsgCrypt;
//!
//! let crypt = MsgCrypt::new("token", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7").unwrap();
//! let sealed = crypt.encrypt("<xml>hi</xml>", &[0; 16], "1409659589", "263014780").unwrap();
//! let plain = crypt.decrypt(&sealed.signature, "1409659589", "263014780", &sealed.encrypt).unwrap();
//! assert_eq!(plain, "<xml>hi</xml>");
//! ```
//!
//! # Layout
//! `crypto` (WXBizMsgCrypt), `xml`, `ids`, `apps` (routing between apps), `policy`, `replay`,
//! `memory` (conversation turns), `http` (requests and answers as values), `job`, `ports`,
//! `kv` (the ports over any key-value store), `wecom/` (the API as data, the client, splitting),
//! `agent/` (echo, OpenAI-compatible, webhook), `config/` (every settings key, once), and
//! `relay/` (the front door: callbacks, the send API, commands, the job runner).
//! With the `testing` feature, `testing` holds the deterministic harness, a whole
//! `TestPlatform`, the port contract tests and Tencent's vectors.
#![no_std]
#![forbid(unsafe_code)]

/// The crate README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod agent;
#[cfg(feature = "std")]
pub mod aibot;
pub mod apps;
#[cfg(feature = "std")]
pub mod config;
pub mod crypto;
#[cfg(all(feature = "std", any(test, feature = "testing")))]
pub mod fuzz;
pub mod http;
pub mod ids;
#[cfg(feature = "std")]
pub mod job;
#[cfg(feature = "std")]
pub mod kv;
#[cfg(feature = "std")]
pub mod media;
pub mod memory;
pub mod pacing;
pub mod policy;
pub mod ports;
#[cfg(feature = "std")]
pub mod relay;
#[cfg(feature = "std")]
pub mod replay;
#[cfg(all(feature = "std", any(test, feature = "testing")))]
pub mod testing;
mod text;
pub mod wecom;
#[cfg(feature = "std")]
pub mod xml;

pub use http::{Answer, BodyError, BodyTooLarge, CappedBody, Drain, Incoming};
#[cfg(feature = "std")]
pub use {
    apps::ConfigError,
    config::{AgentSettings, RawAgentSettings, RawSettings, Settings},
    job::{Job, JobReport, JobState, Step},
    ports::Platform,
    relay::{answer_misconfigured, Event, Level, Relay, MAX_BODY_BYTES},
};
