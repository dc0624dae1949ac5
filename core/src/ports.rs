//! Ports: the few effects a relay needs, as small traits the twins implement.
//!
//! Each trait states its consistency contract: what an implementation may get wrong and what the
//! core does about it. Futures are `Send` so the native twin can spawn them; the Worker wraps its
//! JS futures with workers-rs's `SendFuture`, sound on its single-threaded runtime.
//!
//! In-memory implementations (`Memory*`) live here for the native twin and tests, with null
//! ones for when a store is not wanted. [`contract_tests`] checks any implementation.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

use serde::{Deserialize, Serialize};

use crate::api::{HttpRequest, HttpResponse, TransportError};
use crate::ids::AccessToken;

/// Performs one HTTP request. The only port that talks to the network.
///
/// Contract: a request is sent at most once per call (no hidden retries: retry decisions are
/// the core's); a response with any status is `Ok`; only a transport failure is `Err`.
/// Implementations apply a timeout and report it as [`TransportError::Timeout`].
pub trait HttpClient: Send + Sync {
    /// Sends the request.
    fn send(
        &self,
        req: HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse, TransportError>> + Send;
}

/// The wall clock, in unix seconds.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_unix(&self) -> u64;
}

/// Timers. Native: `tokio::time::sleep`; Worker: `setTimeout` (workers-rs `Delay`).
pub trait Sleeper: Send + Sync {
    /// Completes after `duration`.
    fn sleep(&self, duration: core::time::Duration) -> impl Future<Output = ()> + Send;
}

/// A source of random bytes for ciphertext prefixes and nonces. Production implementations use
/// the OS or Web Crypto CSPRNG.
pub trait Random: Send + Sync {
    /// Fills `buf`.
    fn fill(&self, buf: &mut [u8]);
}

/// A store failed (network, quota, serialisation). Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store error: {}", self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StoreError {}

/// An access token with its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    /// The token.
    pub token: AccessToken,
    /// Unix seconds at which WeCom stops accepting it.
    pub expires_at: u64,
    /// Unix seconds from which it should be replaced.
    #[serde(default)]
    pub refresh_at: u64,
}

impl CachedToken {
    /// A token fetched at `now` that lives `expires_in` seconds.
    pub fn new(token: AccessToken, now: u64, expires_in: u64) -> Self {
        let expires_at = now.saturating_add(expires_in);
        Self {
            token,
            expires_at,
            refresh_at: expires_at - crate::api::refresh_margin(expires_in),
        }
    }

    /// Whether it is time to replace it.
    pub fn needs_refresh(&self, now: u64) -> bool {
        now >= self.refresh_at
    }
}

/// Caches access tokens per app (each app has its own secret, so its own token).
///
/// Contract:
/// - `get` may return a token that WeCom has already invalidated, or a stale one from another
///   replica or location: false positives are allowed, because the core drops a token that
///   WeCom rejects (40014/42001) and fetches again.
/// - `get` may miss (false negatives): the core then fetches a new token, which is only a cost.
/// - `get` never returns a token past its `expires_at`.
/// - `invalidate` removes the entry only if it still holds that token, so a token another
///   worker just fetched is not thrown away: the newest fetch wins.
pub trait TokenCache: Send + Sync {
    /// The cached token of `app`, if any and unexpired at `now`.
    fn get(&self, app: &str, now: u64) -> impl Future<Output = Option<CachedToken>> + Send;
    /// Stores a freshly fetched token.
    fn put(&self, app: &str, token: CachedToken, now: u64) -> impl Future<Output = ()> + Send;
    /// Drops `token` if it is still the cached one.
    fn invalidate(&self, app: &str, token: &AccessToken) -> impl Future<Output = ()> + Send;
}

/// Whether a dedup claim made the caller the first to see a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No live marker existed; one now does. Process the message, or `release` on failure.
    Fresh,
    /// A live marker exists: this is a retry or a replay.
    Duplicate,
}

/// Remembers which callbacks were accepted, for `ttl` seconds.
///
/// Contract:
/// - `claim` is atomic where the backend allows it (memory, Redis `SET NX`): of two concurrent
///   claims of one key, one is `Fresh`. An eventually consistent backend (Workers KV) may let
///   both through; the twin documents this, and a duplicate reply is the failure mode, never a
///   lost message.
/// - A marker lives at least `ttl` seconds unless released.
/// - `release` removes a claim whose job could not be accepted, so WeCom's retry is processed.
/// - On `Err`, the caller must treat the message as not accepted (answer non-200 so WeCom
///   retries) rather than guess.
pub trait DedupStore: Send + Sync {
    /// Claims `key` until `now + ttl`.
    fn claim(
        &self,
        key: &str,
        now: u64,
        ttl: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    /// Releases a claim.
    fn release(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The WeCom user.
    User,
    /// The agent.
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
}

/// Bounds on a stored conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many turns are kept.
    pub max_turns: usize,
    /// At most this many bytes of text are kept.
    pub max_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_turns: 20,
            max_bytes: 32 * 1024,
        }
    }
}

/// Drops the oldest turns until `turns` fits `limits`. Every store applies this on append.
pub fn trim_history(turns: &mut Vec<Turn>, limits: HistoryLimits) {
    let mut bytes: usize = turns.iter().map(|t| t.text.len()).sum();
    let mut drop = 0;
    while drop < turns.len() && (turns.len() - drop > limits.max_turns || bytes > limits.max_bytes)
    {
        bytes -= turns[drop].text.len();
        drop += 1;
    }
    turns.drain(..drop);
}

/// Conversation memory per scoped user (`ScopedUser::key`).
///
/// Contract: `append` applies [`trim_history`] with the given limits; `load` returns turns in
/// order, oldest first. Concurrent appends for one user may be lost on eventually consistent
/// backends; the relay processes one user's messages in order, so this needs no locking there.
pub trait ConversationStore: Send + Sync {
    /// The stored turns.
    fn load(&self, user: &str) -> impl Future<Output = Result<Vec<Turn>, StoreError>> + Send;
    /// Appends turns and trims.
    fn append(
        &self,
        user: &str,
        turns: Vec<Turn>,
        limits: HistoryLimits,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forgets the user's conversation.
    fn clear(&self, user: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A token cache that caches nothing: every call fetches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullTokenCache;

impl TokenCache for NullTokenCache {
    async fn get(&self, _app: &str, _now: u64) -> Option<CachedToken> {
        None
    }
    async fn put(&self, _app: &str, _token: CachedToken, _now: u64) {}
    async fn invalidate(&self, _app: &str, _token: &AccessToken) {}
}

/// A dedup store that remembers nothing: every claim is fresh.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullDedup;

impl DedupStore for NullDedup {
    async fn claim(&self, _key: &str, _now: u64, _ttl: u64) -> Result<Claim, StoreError> {
        Ok(Claim::Fresh)
    }
    async fn release(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(feature = "std")]
pub use memory::{MemoryConversations, MemoryDedup, MemoryTokenCache};

#[cfg(feature = "std")]
mod memory {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tokens in process memory.
    #[derive(Debug, Default)]
    pub struct MemoryTokenCache {
        tokens: Mutex<HashMap<String, CachedToken>>,
    }

    impl TokenCache for MemoryTokenCache {
        async fn get(&self, app: &str, now: u64) -> Option<CachedToken> {
            lock(&self.tokens)
                .get(app)
                .filter(|t| t.expires_at > now)
                .cloned()
        }
        async fn put(&self, app: &str, token: CachedToken, _now: u64) {
            lock(&self.tokens).insert(app.into(), token);
        }
        async fn invalidate(&self, app: &str, token: &AccessToken) {
            let mut tokens = lock(&self.tokens);
            if tokens.get(app).is_some_and(|t| &t.token == token) {
                tokens.remove(app);
            }
        }
    }

    /// Dedup markers in process memory; expired markers are swept as new ones arrive.
    #[derive(Debug, Default)]
    pub struct MemoryDedup {
        markers: Mutex<HashMap<String, u64>>,
    }

    impl MemoryDedup {
        /// Live and expired markers not yet swept.
        pub fn len(&self) -> usize {
            lock(&self.markers).len()
        }

        /// Whether no marker is held.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    impl DedupStore for MemoryDedup {
        async fn claim(&self, key: &str, now: u64, ttl: u64) -> Result<Claim, StoreError> {
            let mut markers = lock(&self.markers);
            if markers.get(key).is_some_and(|&until| until > now) {
                return Ok(Claim::Duplicate);
            }
            // Amortised sweep: only when the map has doubled since it was last cleaned.
            if markers.len() >= 1024 && markers.len().is_power_of_two() {
                markers.retain(|_, until| *until > now);
            }
            markers.insert(key.into(), now.saturating_add(ttl));
            Ok(Claim::Fresh)
        }
        async fn release(&self, key: &str) -> Result<(), StoreError> {
            lock(&self.markers).remove(key);
            Ok(())
        }
    }

    /// Conversations in process memory.
    #[derive(Debug, Default)]
    pub struct MemoryConversations {
        turns: Mutex<HashMap<String, Vec<Turn>>>,
    }

    impl ConversationStore for MemoryConversations {
        async fn load(&self, user: &str) -> Result<Vec<Turn>, StoreError> {
            Ok(lock(&self.turns).get(user).cloned().unwrap_or_default())
        }
        async fn append(
            &self,
            user: &str,
            turns: Vec<Turn>,
            limits: HistoryLimits,
        ) -> Result<(), StoreError> {
            let mut all = lock(&self.turns);
            let history = all.entry(user.into()).or_default();
            history.extend(turns);
            trim_history(history, limits);
            Ok(())
        }
        async fn clear(&self, user: &str) -> Result<(), StoreError> {
            lock(&self.turns).remove(user);
            Ok(())
        }
    }
}

/// Contract tests every port implementation runs. `$block_on` drives a future to completion;
/// `$make` builds a fresh store.
///
/// ```ignore
/// wecom_relay_core::dedup_store_contract_tests!(MemoryDedup::default(), wecom_relay_core::testing::block_on);
/// ```
pub mod contract_tests {
    /// Generates dedup-store contract tests in the calling module.
    #[macro_export]
    macro_rules! dedup_store_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn dedup_claim_is_fresh_once_then_duplicate_until_ttl() {
                use $crate::ports::{Claim, DedupStore};
                let store = $make;
                $block_on(async {
                    assert_eq!(store.claim("k", 1000, 60).await.unwrap(), Claim::Fresh);
                    assert_eq!(store.claim("k", 1001, 60).await.unwrap(), Claim::Duplicate);
                    assert_eq!(store.claim("k", 1059, 60).await.unwrap(), Claim::Duplicate);
                    assert_eq!(store.claim("other", 1001, 60).await.unwrap(), Claim::Fresh);
                    assert_eq!(store.claim("k", 1061, 60).await.unwrap(), Claim::Fresh);
                });
            }

            #[test]
            fn dedup_release_lets_the_retry_through() {
                use $crate::ports::{Claim, DedupStore};
                let store = $make;
                $block_on(async {
                    assert_eq!(store.claim("k", 1, 600).await.unwrap(), Claim::Fresh);
                    store.release("k").await.unwrap();
                    assert_eq!(store.claim("k", 2, 600).await.unwrap(), Claim::Fresh);
                    store.release("never-claimed").await.unwrap();
                });
            }
        };
    }

    /// Generates token-cache contract tests in the calling module.
    #[macro_export]
    macro_rules! token_cache_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn token_cache_keeps_tokens_per_app_until_expiry() {
                use $crate::ids::AccessToken;
                use $crate::ports::{CachedToken, TokenCache};
                let cache = $make;
                $block_on(async {
                    let a = CachedToken::new(AccessToken::new("A"), 1000, 7200);
                    let b = CachedToken::new(AccessToken::new("B"), 1800, 7200);
                    assert!(cache.get("app-a", 1000).await.is_none());
                    cache.put("app-a", a.clone(), 1000).await;
                    cache.put("app-b", b.clone(), 1000).await;
                    assert_eq!(cache.get("app-a", 1000).await, Some(a.clone()));
                    assert_eq!(cache.get("app-b", 1000).await, Some(b));
                    assert!(
                        cache.get("app-a", 8200).await.is_none(),
                        "expired token returned"
                    );
                });
            }

            #[test]
            fn token_cache_invalidate_spares_a_newer_token() {
                use $crate::ids::AccessToken;
                use $crate::ports::{CachedToken, TokenCache};
                let cache = $make;
                $block_on(async {
                    let old = CachedToken::new(AccessToken::new("OLD"), 1000, 7200);
                    let new = CachedToken::new(AccessToken::new("NEW"), 1800, 7200);
                    cache.put("app", old.clone(), 1000).await;
                    cache.put("app", new.clone(), 1001).await;
                    cache.invalidate("app", &old.token).await;
                    assert_eq!(cache.get("app", 1002).await, Some(new.clone()));
                    cache.invalidate("app", &new.token).await;
                    assert!(cache.get("app", 1002).await.is_none());
                });
            }
        };
    }

    /// Generates conversation-store contract tests in the calling module.
    #[macro_export]
    macro_rules! conversation_store_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn conversations_append_in_order_trim_and_clear() {
                use $crate::ports::{ConversationStore, HistoryLimits, Role, Turn};
                let store = $make;
                let t = |role, text: &str| Turn {
                    role,
                    text: text.into(),
                };
                let limits = HistoryLimits {
                    max_turns: 3,
                    max_bytes: 1000,
                };
                $block_on(async {
                    store
                        .append(
                            "c:u",
                            ::std::vec![t(Role::User, "1"), t(Role::Assistant, "2")],
                            limits,
                        )
                        .await
                        .unwrap();
                    store
                        .append(
                            "c:u",
                            ::std::vec![t(Role::User, "3"), t(Role::Assistant, "4")],
                            limits,
                        )
                        .await
                        .unwrap();
                    let texts: ::std::vec::Vec<::std::string::String> = store
                        .load("c:u")
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|t| t.text)
                        .collect();
                    assert_eq!(texts, ["2", "3", "4"]);
                    assert!(store.load("c:other").await.unwrap().is_empty());
                    store.clear("c:u").await.unwrap();
                    assert!(store.load("c:u").await.unwrap().is_empty());
                    let small = HistoryLimits {
                        max_turns: 10,
                        max_bytes: 5,
                    };
                    store
                        .append(
                            "c:v",
                            ::std::vec![t(Role::User, "abc"), t(Role::Assistant, "defg")],
                            small,
                        )
                        .await
                        .unwrap();
                    let texts: ::std::vec::Vec<::std::string::String> = store
                        .load("c:v")
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|t| t.text)
                        .collect();
                    assert_eq!(texts, ["defg"]);
                });
            }
        };
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::test_support::*;
    use crate::testing::block_on;
    use alloc::string::ToString;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    mod memory_dedup {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::dedup_store_contract_tests!(MemoryDedup::default(), block_on);
    }
    mod memory_tokens {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::token_cache_contract_tests!(MemoryTokenCache::default(), block_on);
    }
    mod memory_conversations {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::conversation_store_contract_tests!(MemoryConversations::default(), block_on);
    }

    #[test]
    fn trim_keeps_the_newest() {
        let mut turns: Vec<Turn> = (0..10)
            .map(|i| Turn {
                role: Role::User,
                text: i.to_string(),
            })
            .collect();
        trim_history(
            &mut turns,
            HistoryLimits {
                max_turns: 4,
                max_bytes: 100,
            },
        );
        assert_eq!(turns.first().unwrap().text, "6");
        trim_history(
            &mut turns,
            HistoryLimits {
                max_turns: 4,
                max_bytes: 0,
            },
        );
        assert!(turns.is_empty());
    }

    #[test]
    fn memory_dedup_sweeps_expired_markers() {
        let store = MemoryDedup::default();
        block_on(async {
            for i in 0..5000 {
                store.claim(&i.to_string(), i, 10).await.unwrap();
            }
        });
        assert!(store.len() < 2100, "{} markers kept", store.len());
    }
}
