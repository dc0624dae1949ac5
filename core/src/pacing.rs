//! WeCom's per-member send budget: a member receives at most 30 messages a minute and 1,000 an
//! hour from one app, and WeCom drops the rest without an error. The relay counts every message
//! it sends (answer parts, notices, apologies, send-API messages) against that budget and waits
//! rather than exceed it.
//!
//! [`SendWindow`] is the rule, as data a store keeps per member; the
//! [`crate::ports::SendBudget`] port is where the windows live.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apps::App;

/// Messages a member may receive from one app per minute.
pub const PER_MINUTE: usize = 30;
/// Messages a member may receive from one app per hour.
pub const PER_HOUR: usize = 1000;
/// Slack added to each window: WeCom counts a message when it arrives, a little after the relay
/// took it from the budget, so the relay's windows close a little later than WeCom's.
pub const SLACK_MS: u64 = 1_000;

const MINUTE_MS: u64 = 60_000 + SLACK_MS;
const HOUR_MS: u64 = 3_600_000 + SLACK_MS;

/// The budget key of a member of an app: corp, agent and the user id WeCom matches
/// case-insensitively (lower-cased as [`crate::ids::ScopedUser::key`] does).
pub fn budget_key(app: &App, user_id: &str) -> String {
    format!(
        "{}:{}:{}",
        app.corp_id,
        app.agent_id,
        user_id.to_lowercase()
    )
}

/// The sends to one member within the last hour, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWindow {
    sends: VecDeque<u64>,
}

impl SendWindow {
    /// Takes one send at `now_ms`, or says how long until one is free (taking nothing).
    pub fn take(&mut self, now_ms: u64) -> Result<(), Duration> {
        while self
            .sends
            .front()
            .is_some_and(|&t| t.saturating_add(HOUR_MS) <= now_ms)
        {
            self.sends.pop_front();
        }
        let n = self.sends.len();
        let mut free_at = 0;
        if n >= PER_HOUR {
            free_at = self.sends[n - PER_HOUR] + HOUR_MS;
        }
        if n >= PER_MINUTE {
            free_at = free_at.max(self.sends[n - PER_MINUTE] + MINUTE_MS);
        }
        if free_at > now_ms {
            return Err(Duration::from_millis(free_at - now_ms));
        }
        self.sends.push_back(now_ms);
        Ok(())
    }

    /// Whether nothing in it still counts at `now_ms` (so a store may forget it).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.sends
            .back()
            .is_none_or(|&t| t.saturating_add(HOUR_MS) <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn thirty_a_minute_then_wait_until_the_oldest_leaves() {
        let mut w = SendWindow::default();
        for i in 0..30 {
            w.take(1_000_000 + i * 100).unwrap();
        }
        let wait = w.take(1_003_000).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(1_000_000 + MINUTE_MS - 1_003_000)
        );
        assert!(w.take(1_000_000 + MINUTE_MS - 1).is_err());
        w.take(1_000_000 + MINUTE_MS).unwrap();
        assert!(
            w.take(1_000_000 + MINUTE_MS).is_err(),
            "the second is not free yet"
        );
    }

    #[test]
    fn a_thousand_an_hour() {
        let mut w = SendWindow::default();
        let (mut now, mut sent) = (0, 0);
        // As fast as the minute limit allows.
        while sent < PER_HOUR {
            match w.take(now) {
                Ok(()) => sent += 1,
                Err(wait) => now += wait.as_millis() as u64,
            }
        }
        assert!(
            now < 3_600_000,
            "the minute limit alone lets 1000 through in the hour"
        );
        let wait = w.take(now).unwrap_err();
        assert_eq!(
            now + wait.as_millis() as u64,
            HOUR_MS,
            "the next one is free when the first leaves the hour"
        );
        assert!(!w.is_idle(now));
        assert!(w.is_idle(now + HOUR_MS));
        w.take(now + HOUR_MS).unwrap();
        assert_eq!(w.sends.len(), 1, "old sends are forgotten");
    }
}
