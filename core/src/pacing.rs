//! WeCom's per-member send budget: a member receives at most 30 messages a minute and 1,000 an
//! hour from one app, and WeCom drops the rest without an error. The relay counts every message
//! it sends (answer parts, notices, apologies, send-API messages) against that budget and waits
//! rather than exceed it.
//!
//! [`SendWindow`] is the rule, as data a store keeps per member; the
//! [`crate::ports::SendBudget`] port is where the windows live.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
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

/// The sends to one member, in constant space: the times of the last [`PER_MINUTE`] sends (the
/// minute rule, exactly) and a count per clock minute over the last hour (the hour rule,
/// counted over the current minute and the 60 before it, so never more than WeCom allows in
/// any 60 minutes). At most about a kilobyte per member, in memory or in a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWindow {
    /// The last sends' times (ms), oldest first, at most [`PER_MINUTE`].
    #[serde(default)]
    recent: VecDeque<u64>,
    /// `(minute, sends)` for the minutes with sends, oldest first, at most 61.
    #[serde(default)]
    minutes: VecDeque<(u64, u32)>,
    /// Every send of the last hour, as windows were kept before; read once, then folded in.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    sends: VecDeque<u64>,
}

/// Minutes of the hour rule: the current one and the 60 before it.
const HOUR_MINUTES: u64 = 61;

impl SendWindow {
    /// Takes one send at `now_ms`, or says how long until one is free (taking nothing).
    pub fn take(&mut self, now_ms: u64) -> Result<(), Duration> {
        for t in core::mem::take(&mut self.sends) {
            if t.saturating_add(HOUR_MS) > now_ms {
                self.record(t);
            }
        }
        // A minute's sends count until 61 minutes after it began (plus the slack).
        let expires = |m: u64| (m + HOUR_MINUTES) * 60_000 + SLACK_MS;
        while self
            .minutes
            .front()
            .is_some_and(|&(m, _)| expires(m) <= now_ms)
        {
            self.minutes.pop_front();
        }
        let mut free_at = 0;
        let in_hour: u64 = self.minutes.iter().map(|&(_, n)| u64::from(n)).sum();
        if in_hour >= PER_HOUR as u64 {
            free_at = self.minutes.front().map_or(0, |&(m, _)| expires(m));
        }
        if self.recent.len() >= PER_MINUTE {
            free_at = free_at.max(self.recent[self.recent.len() - PER_MINUTE] + MINUTE_MS);
        }
        if free_at > now_ms {
            return Err(Duration::from_millis(free_at - now_ms));
        }
        self.record(now_ms);
        Ok(())
    }

    fn record(&mut self, at_ms: u64) {
        if self.recent.len() >= PER_MINUTE {
            self.recent.pop_front();
        }
        self.recent.push_back(at_ms);
        let minute = at_ms / 60_000;
        match self.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => self.minutes.push_back((minute, 1)),
        }
    }

    /// Whether nothing in it still counts at `now_ms` (so a store may forget it).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.recent
            .back()
            .or(self.sends.back())
            .is_none_or(|&t| t.saturating_add(HOUR_MS) <= now_ms)
    }

    /// The window in a few bytes, for a store that holds every member's in RAM: each list as
    /// its length and its values' differences, each a LEB128 varint. A member sent one
    /// message is 14 bytes (the three `VecDeque`s are 96 bytes before their contents).
    pub fn pack(&self) -> Box<[u8]> {
        let mut out = Vec::with_capacity(16);
        let mut put = |mut v: u64| loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(low);
                break;
            }
            out.push(low | 0x80);
        };
        for list in [&self.recent, &self.sends] {
            put(list.len() as u64);
            let mut last = 0u64;
            for &t in list {
                // Wrapping: a clock that stepped back packs as a long difference, not a wrong one.
                put(t.wrapping_sub(last));
                last = t;
            }
        }
        put(self.minutes.len() as u64);
        let mut last = 0u64;
        for &(m, n) in &self.minutes {
            put(m.wrapping_sub(last));
            put(u64::from(n));
            last = m;
        }
        out.into_boxed_slice()
    }

    /// Reads what [`SendWindow::pack`] wrote; `None` for anything else.
    pub fn unpack(mut bytes: &[u8]) -> Option<Self> {
        let mut get = || -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&b, rest) = bytes.split_first()?;
                bytes = rest;
                v |= u64::from(b & 0x7f).checked_shl(shift)?;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        let mut lists = [VecDeque::new(), VecDeque::new()];
        for list in &mut lists {
            let len = get()?;
            let mut last = 0u64;
            for _ in 0..len {
                last = last.wrapping_add(get()?);
                list.push_back(last);
            }
        }
        let [recent, sends] = lists;
        let len = get()?;
        let mut minutes = VecDeque::new();
        let mut last = 0u64;
        for _ in 0..len {
            last = last.wrapping_add(get()?);
            minutes.push_back((last, u32::try_from(get()?).ok()?));
        }
        Some(Self {
            recent,
            minutes,
            sends,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
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
        let free = now + wait.as_millis() as u64;
        assert!(
            (HOUR_MS..HOUR_MS + 61_000).contains(&free),
            "the next one is free once the first minute leaves the hour, not before: {free}"
        );
        assert!(w.take(free - 1).is_err());
        assert!(!w.is_idle(now));
        w.take(free).unwrap();
        assert!(w.is_idle(free + HOUR_MS));
        assert!(w.recent.len() <= PER_MINUTE && w.minutes.len() <= HOUR_MINUTES as usize + 1);
    }

    #[test]
    fn no_sixty_minutes_hold_more_than_a_thousand_and_space_is_constant() {
        let mut w = SendWindow::default();
        let mut sent: Vec<u64> = Vec::new();
        let mut now = 5_000;
        // Three hours of a member who is sent something every second when allowed.
        while now < 3 * 3_600_000 {
            if w.take(now).is_ok() {
                sent.push(now);
            }
            let json = serde_json::to_string(&w).unwrap();
            assert!(json.len() < 2_000, "{} bytes", json.len());
            now += 1_000;
        }
        for (i, &t) in sent.iter().enumerate() {
            let in_hour = sent[i..].iter().take_while(|&&u| u < t + 3_600_000).count();
            assert!(in_hour <= PER_HOUR, "{in_hour} sends in the hour from {t}");
            let in_minute = sent[i..].iter().take_while(|&&u| u < t + 60_000).count();
            assert!(in_minute <= PER_MINUTE);
        }
        assert!(
            sent.len() > 2 * PER_HOUR,
            "the budget is used, not starved: {}",
            sent.len()
        );
    }

    #[test]
    fn a_window_kept_the_old_way_still_counts() {
        let old: SendWindow = serde_json::from_str(&format!(
            "{{\"sends\":{:?}}}",
            (0..30).map(|i| 1_000 + i).collect::<Vec<u64>>()
        ))
        .unwrap();
        let mut w = old;
        assert!(w.take(2_000).is_err(), "30 sends a moment ago");
        assert!(w.take(1_000 + MINUTE_MS).is_ok());
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A packed window is the same window, whatever sends (and clock steps back) built it.
        #[test]
        fn a_packed_window_is_the_same_window(
            steps in prop::collection::vec(-5_000i64..200_000, 0..400),
            start in 0u64..=u64::MAX / 2,
            legacy in prop::collection::vec(any::<u64>(), 0..5),
        ) {
            let mut w = SendWindow { sends: legacy.into_iter().collect(), ..SendWindow::default() };
            prop_assert_eq!(SendWindow::unpack(&w.pack()), Some(w.clone()));
            let mut now = start;
            for step in steps {
                now = now.saturating_add_signed(step);
                let _ = w.take(now);
                let packed = w.pack();
                prop_assert_eq!(SendWindow::unpack(&packed), Some(w.clone()));
                // Shorter is never read as a window.
                prop_assert_eq!(SendWindow::unpack(&packed[..packed.len() - 1]), None);
            }
        }

        #[test]
        fn any_bytes_unpack_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = SendWindow::unpack(&bytes);
        }
    }

    #[test]
    fn one_send_packs_small() {
        let mut w = SendWindow::default();
        w.take(1_796_000_000_000).unwrap();
        assert_eq!(w.pack().len(), 14);
    }
}
