//! Stand-ins for the servers wecom-relay talks to, served on loopback: [`wecom`] for WeCom's
//! server API (documented errcodes, token expiry, the 2048-byte cut and the 30-per-minute drop,
//! fault injection) and [`openai`] for an OpenAI-compatible Chat Completions API.
//!
//! They are test and demo equipment, kept out of the relay itself: the `wecom-relay` binary
//! links them only through its `demo` feature.

pub mod openai;
pub mod wecom;
