//! WeCom's server API: each call as a request value and a typed answer ([`api`]), the client
//! that keeps tokens fresh and sends over the ports ([`client`]), and lossless reply splitting
//! at WeCom's 2048-byte limit ([`split`]).

pub mod api;
pub mod client;
pub mod markdown;
pub mod split;
