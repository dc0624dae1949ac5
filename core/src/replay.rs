//! Replay protection and dedup decisions.
//!
//! WeCom's SDKs check neither timestamp freshness nor nonce reuse; WeCom itself retries a
//! callback up to three times. Two defences, both decided here:
//! - A window on the signed timestamp: a callback older (or newer) than `max_skew_secs` is
//!   refused. 0 disables the check.
//! - Dedup keys: `MsgId` for messages, `FromUserName` + `CreateTime` for events, scoped by corp
//!   and agent. A marker lives for `dedup_ttl_secs`.
//!
//! If the dedup TTL is at least the window, every replay of an accepted callback is either
//! outside the window (rejected) or still within the TTL (deduped). [`ReplayConfig::new`]
//! enforces that.

use alloc::format;
use alloc::string::String;
use core::fmt::Write as _;

use crate::apps::ConfigError;
use crate::xml::Message;

/// The replay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    max_skew_secs: u64,
    dedup_ttl_secs: u64,
}

/// Why a callback's timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The timestamp is not a number.
    BadTimestamp,
    /// The timestamp is outside the window by this many seconds.
    OutsideWindow {
        /// How far from now the timestamp is.
        skew_secs: u64,
    },
}

impl core::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadTimestamp => f.write_str("timestamp is not a number"),
            Self::OutsideWindow { skew_secs } => {
                write!(f, "timestamp is {skew_secs}s away from now")
            }
        }
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            max_skew_secs: 600,
            dedup_ttl_secs: 900,
        }
    }
}

impl ReplayConfig {
    /// Checks the settings: the dedup TTL must cover the window, and a disabled window needs a
    /// TTL that at least covers WeCom's retries.
    pub fn new(max_skew_secs: u64, dedup_ttl_secs: u64) -> Result<Self, ConfigError> {
        if dedup_ttl_secs < 60 {
            return Err(ConfigError::new(
                "dedup_ttl_secs",
                format!("must be at least 60 (covers WeCom's retries and KV's minimum TTL), got {dedup_ttl_secs}"),
            ));
        }
        if max_skew_secs > 0 && dedup_ttl_secs < max_skew_secs {
            return Err(ConfigError::new(
                "dedup_ttl_secs",
                format!("must not be shorter than max_timestamp_skew_secs ({max_skew_secs}), got {dedup_ttl_secs}: a replay inside the window would pass"),
            ));
        }
        Ok(Self {
            max_skew_secs,
            dedup_ttl_secs,
        })
    }

    /// The window in seconds; 0 when disabled.
    pub fn max_skew_secs(&self) -> u64 {
        self.max_skew_secs
    }

    /// How long a dedup marker lives.
    pub fn dedup_ttl_secs(&self) -> u64 {
        self.dedup_ttl_secs
    }

    /// Checks the signed `timestamp` query parameter against `now` (unix seconds).
    pub fn check_timestamp(&self, timestamp: &str, now: u64) -> Result<(), ReplayError> {
        let ts: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| ReplayError::BadTimestamp)?;
        if self.max_skew_secs == 0 {
            return Ok(());
        }
        let skew_secs = ts.abs_diff(now);
        if skew_secs > self.max_skew_secs {
            Err(ReplayError::OutsideWindow { skew_secs })
        } else {
            Ok(())
        }
    }
}

/// The dedup key of a decrypted message, scoped by corp and agent. Case is kept for MsgId but
/// folded for user ids, since WeCom's user ids are case-insensitive.
pub fn dedup_key(msg: &Message) -> String {
    let agent = msg.agent_id.as_deref().unwrap_or("-");
    let mut key = String::with_capacity(msg.to_user_name.len() + agent.len() + 48);
    for part in [msg.to_user_name.as_ref(), ":", agent] {
        key.push_str(part);
    }
    match &msg.msg_id {
        Some(id) => {
            key.push_str(":m:");
            key.push_str(id);
        }
        None => {
            let user = msg.from_user_name.to_lowercase();
            let _ = write!(key, ":e:{user}:{}", msg.create_time);
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    use crate::xml::{parse_message, Event, MessageBody};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn window() {
        let r = ReplayConfig::default();
        assert_eq!(r.check_timestamp("1000", 1600), Ok(()));
        assert_eq!(
            r.check_timestamp("1000", 1601),
            Err(ReplayError::OutsideWindow { skew_secs: 601 })
        );
        assert_eq!(
            r.check_timestamp("2000", 1399),
            Err(ReplayError::OutsideWindow { skew_secs: 601 })
        );
        assert_eq!(r.check_timestamp("x", 1000), Err(ReplayError::BadTimestamp));
        let off = ReplayConfig::new(0, 900).unwrap();
        assert_eq!(off.check_timestamp("1", 1_000_000_000), Ok(()));
        assert_eq!(off.check_timestamp("-1", 1), Err(ReplayError::BadTimestamp));
    }

    #[test]
    fn ttl_must_cover_window() {
        assert_eq!(
            ReplayConfig::new(600, 599).unwrap_err().key,
            "dedup_ttl_secs"
        );
        assert!(ReplayConfig::new(600, 600).is_ok());
        assert!(ReplayConfig::new(0, 30).is_err());
    }

    /// Every replay of an accepted callback is either outside the window or inside the TTL.
    #[test]
    fn replays_are_rejected_or_deduped_for_every_delay() {
        let r = ReplayConfig::new(300, 300).unwrap();
        let ts = 10_000u64;
        let accepted_at = ts + 300; // accepted at the very edge of the window
        for delay in 0..2000 {
            let replay_at = accepted_at + delay;
            let in_window = r.check_timestamp("10000", replay_at).is_ok();
            let marker_alive = delay < r.dedup_ttl_secs();
            assert!(
                !in_window || marker_alive,
                "replay after {delay}s would pass"
            );
        }
    }

    #[test]
    fn keys() {
        let m = parse_message("<xml><ToUserName>ww1</ToUserName><FromUserName>Al</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>77</MsgId><AgentID>9</AgentID></xml>").unwrap();
        assert_eq!(dedup_key(&m), "ww1:9:m:77");
        let e = parse_message("<xml><ToUserName>ww1</ToUserName><FromUserName>Al</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>subscribe</Event><AgentID>9</AgentID></xml>").unwrap();
        assert!(matches!(e.body, MessageBody::Event(Event::Subscribe)));
        assert_eq!(dedup_key(&e), "ww1:9:e:al:5");
    }
}
