//! The WeCom API client: token lifecycle and sending, over the ports.
//!
//! Decisions made here, the same for both twins:
//! - A cached token is used until [`crate::api::TOKEN_REFRESH_MARGIN_SECS`] before expiry (half its
//!   life for short-lived ones); then it is
//!   refreshed. If the refresh fails while the old token is still valid, the old one is used.
//! - A call rejected with 40014/42001 invalidates that token (only that one), fetches a new one
//!   and retries once.
//! - Replies are split at 2048 bytes and sent in order; a failure stops the sequence and says
//!   how many parts went out, so nothing is sent twice by a retry of the rest.
//!
//! Backoff between retryable failures is the twin's (it owns timers); [`retry_delay_ms`]
//! says how long.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;

use crate::api::{self, ApiError, Content, ErrorClass, HttpRequest, HttpResponse, SendReceipt};
use crate::app::App;
use crate::ids::AccessToken;
use crate::ports::{CachedToken, Clock, HttpClient, TokenCache};
use crate::split::split_for_wecom;

/// The cache key of an app's token: corp and agent, stable across renames.
pub fn token_key(app: &App) -> String {
    format!("{}:{}", app.corp_id, app.agent_id)
}

/// How long to wait before retry number `attempt` (1-based) of a retryable failure:
/// exponential from 500 ms, capped at 30 s, never less than a server's `Retry-After`.
/// `jitter` (0..=1000) spreads replicas apart.
pub fn retry_delay_ms(attempt: u32, error: &ApiError, jitter: u16) -> u64 {
    let base: u64 = match error.class {
        ErrorClass::RateLimited => 2_000,
        _ => 500,
    };
    let exp = base
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(10))
        .min(30_000);
    let jittered = exp + exp * u64::from(jitter.min(1000)) / 4000;
    let floor = error.retry_after_secs.unwrap_or(0).saturating_mul(1000);
    jittered.max(floor)
}

/// Serialises token refreshes per key, so concurrent callers fetch one token, not many.
///
/// Contract: while a guard for a key is held, `lock` for the same key waits. Distinct keys do
/// not wait on each other. The Worker needs none (a token fetched twice is only a cost).
pub trait RefreshLock: Send + Sync {
    /// Held while refreshing.
    type Guard<'a>: Send
    where
        Self: 'a;
    /// Waits for the key's lock.
    fn lock<'a>(&'a self, key: &'a str) -> impl Future<Output = Self::Guard<'a>> + Send;
}

/// No serialisation.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRefreshLock;

impl RefreshLock for NoRefreshLock {
    type Guard<'a> = ();
    async fn lock<'a>(&'a self, _key: &'a str) {}
}

/// How many attempts a retryable failure gets in total.
pub const MAX_ATTEMPTS: u32 = 5;

/// Sending a split reply stopped part-way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialSend {
    /// Parts that WeCom accepted before the failure.
    pub sent: usize,
    /// Parts in total.
    pub total: usize,
    /// The failure.
    pub error: ApiError,
}

/// A WeCom API client borrowing its ports.
pub struct WeComClient<'a, H, C, K, L = NoRefreshLock> {
    /// Base URL (`api_base`).
    pub api_base: &'a str,
    /// The HTTP port.
    pub http: &'a H,
    /// The token cache.
    pub tokens: &'a C,
    /// The clock.
    pub clock: &'a K,
    /// Serialises token refreshes per app.
    pub refresh: &'a L,
}

impl<'a, H, C, K> WeComClient<'a, H, C, K, NoRefreshLock> {
    /// A client without refresh serialisation (one isolate, one task, or tests).
    pub fn new(api_base: &'a str, http: &'a H, tokens: &'a C, clock: &'a K) -> Self {
        Self {
            api_base,
            http,
            tokens,
            clock,
            refresh: &NoRefreshLock,
        }
    }
}

impl<H: HttpClient, C: TokenCache, K: Clock, L: RefreshLock> WeComClient<'_, H, C, K, L> {
    async fn exchange(&self, req: HttpRequest) -> Result<HttpResponse, ApiError> {
        self.http.send(req).await.map_err(ApiError::transport)
    }

    /// The app's access token, from the cache or freshly fetched.
    pub async fn token(&self, app: &App) -> Result<AccessToken, ApiError> {
        let now = self.clock.now_unix();
        let key = token_key(app);
        if let Some(t) = self
            .tokens
            .get(&key, now)
            .await
            .filter(|t| !t.needs_refresh(now))
        {
            return Ok(t.token);
        }
        // One refresh per app at a time: whoever waited finds the fresh token in the cache.
        let _guard = self.refresh.lock(&key).await;
        let now = self.clock.now_unix();
        let cached = self.tokens.get(&key, now).await;
        match cached {
            Some(t) if !t.needs_refresh(now) => Ok(t.token),
            Some(t) => match self.fetch_token(app).await {
                Ok(fresh) => Ok(fresh),
                // Still valid for up to the margin: better than failing now.
                Err(e) if e.class != ErrorClass::Config && t.expires_at > now => Ok(t.token),
                Err(e) => Err(e),
            },
            None => self.fetch_token(app).await,
        }
    }

    /// Fetches a new token and caches it.
    pub async fn fetch_token(&self, app: &App) -> Result<AccessToken, ApiError> {
        let now = self.clock.now_unix();
        let resp = self
            .exchange(api::get_token(
                self.api_base,
                &app.corp_id,
                &app.corp_secret,
            ))
            .await?;
        let grant = api::parse_token(&resp)?;
        self.tokens
            .put(
                &token_key(app),
                CachedToken::new(grant.access_token.clone(), now, grant.expires_in),
                now,
            )
            .await;
        Ok(grant.access_token)
    }

    /// Makes one API call with the app's token: on 40014/42001, drops that token, fetches a new
    /// one and tries once more.
    pub async fn call<T>(
        &self,
        app: &App,
        build: impl Fn(&AccessToken) -> Result<HttpRequest, ApiError>,
        parse: impl Fn(&HttpResponse) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let token = self.token(app).await?;
        let first = parse(&self.exchange(build(&token)?).await?);
        match first {
            Err(e) if e.class == ErrorClass::TokenInvalid => {
                self.tokens.invalidate(&token_key(app), &token).await;
                let fresh = self.fetch_token(app).await?;
                parse(&self.exchange(build(&fresh)?).await?)
            }
            other => other,
        }
    }

    /// Sends one message to `to_user` (a UserID of the app's corp).
    pub async fn send(
        &self,
        app: &App,
        to_user: &str,
        content: &Content,
    ) -> Result<SendReceipt, ApiError> {
        self.call(
            app,
            |token| api::send_message(self.api_base, token, app.agent_id, to_user, content),
            api::parse_send,
        )
        .await
    }

    /// Sends `text` (or markdown) in as many parts as it takes, in order. `skip` parts are
    /// assumed sent already (a retry resumes where the last attempt stopped).
    pub async fn send_text(
        &self,
        app: &App,
        to_user: &str,
        text: &str,
        markdown: bool,
        skip: usize,
    ) -> Result<Vec<SendReceipt>, PartialSend> {
        let parts = split_for_wecom(text);
        let total = parts.len();
        let mut receipts = Vec::with_capacity(total);
        for (i, part) in parts.into_iter().enumerate().skip(skip) {
            let content = if markdown {
                Content::Markdown { content: part }
            } else {
                Content::Text { content: part }
            };
            match self.send(app, to_user, &content).await {
                Ok(r) => receipts.push(r),
                Err(error) => {
                    return Err(PartialSend {
                        sent: i,
                        total,
                        error,
                    })
                }
            }
        }
        Ok(receipts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Body, ErrorClass};
    use crate::app::{AppConfig, Apps};
    use crate::ports::MemoryTokenCache;
    #[allow(unused_imports)]
    use crate::test_support::*;
    use crate::testing::{block_on, FixedClock, ScriptedHttp};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn app() -> App {
        let cfg = AppConfig {
            name: Some("a".into()),
            corp_id: "ww1".into(),
            corp_secret: "S3CRET".into(),
            agent_id: "1000002".into(),
            token: "tok".into(),
            encoding_aes_key: "A".repeat(43),
        };
        Apps::from_configs(&[cfg], true)
            .unwrap()
            .get(0)
            .unwrap()
            .clone()
    }

    const TOKEN_OK: &str = r#"{"errcode":0,"errmsg":"ok","access_token":"T1","expires_in":7200}"#;
    const TOKEN_2: &str = r#"{"errcode":0,"errmsg":"ok","access_token":"T2","expires_in":7200}"#;
    const SENT: &str = r#"{"errcode":0,"errmsg":"ok","invaliduser":"","msgid":"m"}"#;

    #[test]
    fn caches_the_token_and_refreshes_before_expiry() {
        let (http, cache, clock, app) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1000),
            app(),
        );
        let client = WeComClient::new("http://127.0.0.1:1", &http, &cache, &clock);
        http.push_json(TOKEN_OK).push_json(SENT).push_json(SENT);
        block_on(async {
            client
                .send(
                    &app,
                    "alice",
                    &Content::Text {
                        content: "a".into(),
                    },
                )
                .await
                .unwrap();
            client
                .send(
                    &app,
                    "alice",
                    &Content::Text {
                        content: "b".into(),
                    },
                )
                .await
                .unwrap();
        });
        assert_eq!(
            http.paths()
                .iter()
                .filter(|p| p.ends_with("gettoken"))
                .count(),
            1
        );
        let gettoken = &http.requests()[0];
        assert_eq!(
            gettoken.query_param("corpsecret").as_deref(),
            Some("S3CRET")
        );
        assert_eq!(
            http.requests()[1].query_param("access_token").as_deref(),
            Some("T1")
        );

        // Inside the margin: refreshed before WeCom would reject it.
        clock.advance(7200 - crate::api::TOKEN_REFRESH_MARGIN_SECS);
        http.push_json(TOKEN_2).push_json(SENT);
        block_on(client.send(
            &app,
            "alice",
            &Content::Text {
                content: "c".into(),
            },
        ))
        .unwrap();
        assert_eq!(
            http.requests()
                .last()
                .unwrap()
                .query_param("access_token")
                .as_deref(),
            Some("T2")
        );
    }

    #[test]
    fn a_short_lived_token_is_used_then_replaced_before_it_dies() {
        let (http, cache, clock, app) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1000),
            app(),
        );
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        http.push_json(r#"{"errcode":0,"access_token":"S1","expires_in":30}"#)
            .push_json(r#"{"errcode":0,"access_token":"S2","expires_in":30}"#);
        assert_eq!(block_on(client.token(&app)).unwrap().expose(), "S1");
        clock.advance(10);
        assert_eq!(
            block_on(client.token(&app)).unwrap().expose(),
            "S1",
            "reused while young"
        );
        clock.advance(5);
        assert_eq!(
            block_on(client.token(&app)).unwrap().expose(),
            "S2",
            "replaced at half-life"
        );
    }

    #[test]
    fn a_failed_refresh_inside_the_margin_keeps_the_old_token() {
        let (http, cache, clock, app) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1000),
            app(),
        );
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        http.push_json(TOKEN_OK);
        block_on(client.token(&app)).unwrap();
        clock.advance(7200 - 100);
        http.push_json(r#"{"errcode":-1,"errmsg":"system busy"}"#);
        assert_eq!(block_on(client.token(&app)).unwrap().expose(), "T1");
    }

    #[test]
    fn token_expired_mid_flight_is_refreshed_once_and_retried() {
        let (http, cache, clock, app) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1000),
            app(),
        );
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        http.push_json(TOKEN_OK)
            .push_json(r#"{"errcode":42001,"errmsg":"access_token expired"}"#)
            .push_json(TOKEN_2)
            .push_json(SENT);
        block_on(client.send(
            &app,
            "alice",
            &Content::Text {
                content: "x".into(),
            },
        ))
        .unwrap();
        let tokens: Vec<_> = http
            .requests()
            .iter()
            .filter_map(|r| r.query_param("access_token"))
            .collect();
        assert_eq!(tokens, ["T1", "T2"]);

        // A second rejection is not retried again: no loop.
        http.push_json(r#"{"errcode":40014,"errmsg":"invalid access_token"}"#)
            .push_json(TOKEN_OK)
            .push_json(r#"{"errcode":40014,"errmsg":"invalid access_token"}"#);
        let e = block_on(client.send(
            &app,
            "alice",
            &Content::Text {
                content: "y".into(),
            },
        ))
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::TokenInvalid);
        assert_eq!(http.requests().len(), 7);
    }

    #[test]
    fn long_text_goes_out_in_order_and_a_failure_reports_progress() {
        let (http, cache, clock, app) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1000),
            app(),
        );
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        let text = "第一段。".repeat(400); // 4800 bytes: 3 parts
        http.push_json(TOKEN_OK)
            .push_json(SENT)
            .push_json(SENT)
            .push_json(SENT);
        assert_eq!(
            block_on(client.send_text(&app, "alice", &text, false, 0))
                .unwrap()
                .len(),
            3
        );
        let mut sent = String::new();
        for r in http.requests().iter().skip(1) {
            let Body::Json(json) = &r.body else { panic!() };
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let part = v["text"]["content"].as_str().unwrap();
            assert!(part.len() <= 2048);
            sent.push_str(part);
        }
        assert_eq!(sent, text);

        http.push_json(SENT).push_json(
            r#"{"errcode":60020,"errmsg":"not allow to access from your ip, from ip: 1.2.3.4"}"#,
        );
        let partial = block_on(client.send_text(&app, "alice", &text, false, 0)).unwrap_err();
        assert_eq!(
            (partial.sent, partial.total, partial.error.class),
            (1, 3, ErrorClass::IpNotTrusted)
        );
        // Resume skips what went out.
        let before = http.requests().len();
        http.push_json(SENT).push_json(SENT);
        block_on(client.send_text(&app, "alice", &text, true, partial.sent)).unwrap();
        assert_eq!(http.requests().len() - before, 2);
    }

    #[test]
    fn retry_delays_grow_cap_and_respect_retry_after() {
        let busy = ApiError::transport(crate::api::TransportError::Timeout);
        assert_eq!(retry_delay_ms(1, &busy, 0), 500);
        assert_eq!(retry_delay_ms(2, &busy, 0), 1000);
        assert_eq!(retry_delay_ms(30, &busy, 0), 30_000);
        assert_eq!(retry_delay_ms(1, &busy, 1000), 625);
        let mut limited = busy.clone();
        limited.class = ErrorClass::RateLimited;
        limited.retry_after_secs = Some(9);
        assert_eq!(retry_delay_ms(1, &limited, 0), 9000);
    }
}
