//! Ports over a plain key-value store: the token cache, dedup markers, conversations and job
//! progress, written once for any [`KeyValue`] backend (Workers KV today; Redis, or another
//! shared store, tomorrow).
//!
//! The stores never rely on the backend's expiry for correctness: each value carries its own
//! deadline, and an entry the backend still returns after its time is treated as gone. Expiry
//! there is only a bound on storage. Every store here runs the same contract tests as the
//! in-memory ones, over [`MemoryKv`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;

use serde::{Deserialize, Serialize};

use crate::ids::AccessToken;
use crate::job::JobState;
use crate::memory::{trim_history, HistoryLimits, Turn};
use crate::pacing::SendWindow;
use crate::ports::{
    CachedToken, Claim, ConversationStore, DedupStore, SendBudget, StoreError, TokenCache,
};

/// How long an idle conversation is kept.
pub const CONVERSATION_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long a queued job's progress is kept between deliveries.
pub const JOB_STATE_TTL_SECS: u64 = 24 * 3600;

/// A key-value store with per-entry expiry.
///
/// Contract:
/// - `get` may return a value written elsewhere up to a backend-specific delay ago (Workers KV
///   is eventually consistent across locations, about a minute), or one whose expiry passed.
/// - `put` replaces the value; the backend may keep it longer than `ttl_secs`, never shorter
///   than the smaller of `ttl_secs` and its own minimum (Workers KV: 60 s).
/// - `delete` of a missing key succeeds.
pub trait KeyValue: Send + Sync {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Stores `value` under `key` for about `ttl_secs`.
    fn put(
        &self,
        key: &str,
        value: String,
        ttl_secs: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes `key`.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

async fn get_json<K: KeyValue, T: for<'de> Deserialize<'de>>(
    kv: &K,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match kv.get(key).await? {
        None => Ok(None),
        // A value this version cannot read is treated as absent, not as an error: it is
        // rewritten on the next put.
        Some(text) => Ok(serde_json::from_str(&text).ok()),
    }
}

async fn put_json<K: KeyValue, T: Serialize>(
    kv: &K,
    key: &str,
    value: &T,
    ttl: u64,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(value).map_err(|e| StoreError(format!("serialise: {e}")))?;
    kv.put(key, text, ttl).await
}

/// Access tokens under `token:<corp>:<agent>`, expiring with the token.
#[derive(Debug, Clone)]
pub struct KvTokenCache<K>(pub K);

impl<K: KeyValue> TokenCache for KvTokenCache<K> {
    async fn get(&self, app: &str, now: u64) -> Option<CachedToken> {
        let token: CachedToken = get_json(&self.0, &format!("token:{app}"))
            .await
            .ok()
            .flatten()?;
        (token.expires_at > now).then_some(token)
    }

    async fn put(&self, app: &str, token: CachedToken, now: u64) {
        let key = format!("token:{app}");
        // Two isolates may both refresh. Keep the token that lives longer: WeCom hands out the
        // same token while it is valid, and a newer one only after the old one died.
        if let Ok(Some(current)) = get_json::<K, CachedToken>(&self.0, &key).await {
            if current.expires_at > token.expires_at && current.token != token.token {
                return;
            }
        }
        let ttl = token.expires_at.saturating_sub(now);
        // A failed write only costs a refetch later.
        let _ = put_json(&self.0, &key, &token, ttl).await;
    }

    async fn invalidate(&self, app: &str, token: &AccessToken) {
        let key = format!("token:{app}");
        if let Ok(Some(current)) = get_json::<K, CachedToken>(&self.0, &key).await {
            if &current.token == token {
                let _ = self.0.delete(&key).await;
            }
        }
    }
}

/// Dedup markers under `dedup:<key>`, each holding the unix time it lapses. Not atomic on an
/// eventually consistent backend: two deliveries in different locations may both pass, so the
/// failure mode is a duplicate reply, never a lost message.
#[derive(Debug, Clone)]
pub struct KvDedup<K>(pub K);

impl<K: KeyValue> DedupStore for KvDedup<K> {
    async fn claim(&self, key: &str, now: u64, ttl: u64) -> Result<Claim, StoreError> {
        let key = format!("dedup:{key}");
        if let Some(until) = get_json::<K, u64>(&self.0, &key).await? {
            if until > now {
                return Ok(Claim::Duplicate);
            }
        }
        put_json(&self.0, &key, &now.saturating_add(ttl), ttl).await?;
        Ok(Claim::Fresh)
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(&format!("dedup:{key}")).await
    }
}

/// Conversations under `conv:<corp>:<user>`, forgotten after [`CONVERSATION_TTL_SECS`] of
/// silence.
#[derive(Debug, Clone)]
pub struct KvConversations<K>(pub K);

impl<K: KeyValue> ConversationStore for KvConversations<K> {
    async fn load(&self, user: &str) -> Result<Vec<Turn>, StoreError> {
        Ok(get_json(&self.0, &format!("conv:{user}"))
            .await?
            .unwrap_or_default())
    }

    async fn append(
        &self,
        user: &str,
        turns: Vec<Turn>,
        limits: HistoryLimits,
    ) -> Result<(), StoreError> {
        let key = format!("conv:{user}");
        let mut history: Vec<Turn> = get_json(&self.0, &key).await?.unwrap_or_default();
        history.extend(turns);
        trim_history(&mut history, limits);
        put_json(&self.0, &key, &history, CONVERSATION_TTL_SECS).await
    }

    async fn clear(&self, user: &str) -> Result<(), StoreError> {
        self.0.delete(&format!("conv:{user}")).await
    }
}

/// Send budgets under `budget:<corp>:<agent>:<user>`. Read-modify-write: on an eventually
/// consistent backend two locations may both take the last slot, and a failing backend lets
/// the send go (see [`SendBudget`]).
#[derive(Debug, Clone)]
pub struct KvSendBudget<K>(pub K);

impl<K: KeyValue> SendBudget for KvSendBudget<K> {
    async fn take(&self, key: &str, now_ms: u64) -> Result<(), core::time::Duration> {
        let key = format!("budget:{key}");
        let Ok(window) = get_json::<K, SendWindow>(&self.0, &key).await else {
            return Ok(());
        };
        let mut window = window.unwrap_or_default();
        window.take(now_ms)?;
        let _ = put_json(&self.0, &key, &window, 3600 + 60).await;
        Ok(())
    }
}

/// The progress of queued jobs under `job:<id>`, kept between deliveries so that a retry
/// neither asks the agent again nor resends a part.
#[derive(Debug, Clone)]
pub struct KvJobStates<K>(pub K);

impl<K: KeyValue> KvJobStates<K> {
    /// The job's progress so far (a fresh state when none is kept).
    pub async fn load(&self, job: &str) -> JobState {
        get_json(&self.0, &format!("job:{job}"))
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps the progress for the next delivery.
    pub async fn save(&self, job: &str, state: &JobState) -> Result<(), StoreError> {
        put_json(&self.0, &format!("job:{job}"), state, JOB_STATE_TTL_SECS).await
    }

    /// Forgets a finished job.
    pub async fn forget(&self, job: &str) -> Result<(), StoreError> {
        self.0.delete(&format!("job:{job}")).await
    }
}

#[cfg(feature = "std")]
pub use memory_kv::MemoryKv;

#[cfg(feature = "std")]
mod memory_kv {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A [`KeyValue`] in process memory that never expires anything: the harshest backend for
    /// the stores above, which must not depend on expiry.
    #[derive(Debug, Default)]
    pub struct MemoryKv {
        entries: Mutex<HashMap<String, String>>,
    }

    impl MemoryKv {
        fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
            self.entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    impl KeyValue for MemoryKv {
        async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
            Ok(self.entries().get(key).cloned())
        }
        async fn put(&self, key: &str, value: String, _ttl_secs: u64) -> Result<(), StoreError> {
            self.entries().insert(key.into(), value);
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.entries().remove(key);
            Ok(())
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::testing::block_on;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    mod kv_dedup {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::dedup_store_contract_tests!(KvDedup(MemoryKv::default()), block_on);
    }
    mod kv_tokens {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::token_cache_contract_tests!(KvTokenCache(MemoryKv::default()), block_on);
    }
    mod kv_budget {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::send_budget_contract_tests!(KvSendBudget(MemoryKv::default()), block_on);
    }
    mod kv_conversations {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::conversation_store_contract_tests!(KvConversations(MemoryKv::default()), block_on);
    }

    #[test]
    fn job_progress_survives_until_forgotten_and_unreadable_values_start_afresh() {
        block_on(async {
            let states = KvJobStates(MemoryKv::default());
            assert_eq!(states.load("j").await, JobState::default());
            let state = JobState {
                parts_sent: 2,
                attempts: 1,
                ..JobState::default()
            };
            states.save("j", &state).await.unwrap();
            assert_eq!(states.load("j").await, state);
            states.forget("j").await.unwrap();
            assert_eq!(states.load("j").await, JobState::default());
            states.0.put("job:k", "{not json".into(), 60).await.unwrap();
            assert_eq!(states.load("k").await, JobState::default());
        });
    }
}
