//! The protocol core of wecom-relay: everything the relay decides, with no I/O of its own.
//!
//! It verifies and decrypts WeCom callbacks (WXBizMsgCrypt), parses their XML, routes each one to
//! the app it belongs to, applies the access policy and the replay window, turns WeCom server
//! API calls into request values, and splits replies into parts WeCom accepts.
//!
//! It never opens a socket, reads a clock, draws random numbers or spawns a task: time, random
//! bytes and nonces are arguments, and the few effects a relay needs go through the small traits
//! in [`ports`]. The native server and the Cloudflare Worker are thin shells around it.
//!
//! ```
//! use wecom_relay_core::crypto::MsgCrypt;
//!
//! let crypt = MsgCrypt::new("token", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7").unwrap();
//! let sealed = crypt.encrypt("<xml>hi</xml>", &[0; 16], "1409659589", "263014780").unwrap();
//! let plain = crypt.decrypt(&sealed.signature, "1409659589", "263014780", &sealed.encrypt).unwrap();
//! assert_eq!(plain, "<xml>hi</xml>");
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod agent;
pub mod api;
pub mod app;
pub mod client;
pub mod crypto;
pub mod ids;
#[cfg(feature = "std")]
pub mod openai;
pub mod policy;
pub mod ports;
#[cfg(feature = "std")]
pub mod relay;
#[cfg(feature = "std")]
pub mod replay;
#[cfg(feature = "std")]
pub mod send_api;
#[cfg(feature = "std")]
pub mod settings;
pub mod split;
#[cfg(feature = "std")]
pub mod webhook;
#[cfg(feature = "std")]
pub mod xml;

#[cfg(test)]
mod test_support;
#[cfg(feature = "std")]
pub mod testing;
