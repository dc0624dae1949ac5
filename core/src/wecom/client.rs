//! The WeCom API client: token lifecycle and sending, over the ports.
//!
//! Decisions made here, the same for both twins:
//! - A cached token is used until [`crate::wecom::api::TOKEN_REFRESH_MARGIN_SECS`] before
//!   expiry (half its life for short-lived ones); then it is refreshed. If the refresh fails while the old token is still valid, the old one is used.
//! - A call rejected with 40014/42001 invalidates that token (only that one), fetches a new one
//!   and retries once.
//!
//! Splitting, pacing and resuming a reply part by part are the relay's job runner's; the client
//! sends one message at a time.
//!
//! [`retry_delay_ms`] says how long to wait before another attempt; [`crate::Relay`] decides
//! when to make it.

use alloc::format;
use alloc::string::String;

use crate::apps::App;
use crate::http::{HttpRequest, HttpResponse};
use crate::ids::AccessToken;
use crate::ports::{CachedToken, Clock, HttpClient, NoRefreshLock, RefreshLock, TokenCache};
use crate::wecom::api::{self, ApiError, Content, ErrorClass, SendReceipt};

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

/// How many attempts a retryable failure gets in total.
pub const MAX_ATTEMPTS: u32 = 5;

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

    /// Like `exchange`, reading at most `max` bytes of the answer.
    async fn exchange_capped(
        &self,
        req: HttpRequest,
        max: Option<usize>,
    ) -> Result<HttpResponse, ApiError> {
        let Some(max) = max else {
            return self.exchange(req).await;
        };
        let mut seen = 0usize;
        let resp = self
            .http
            .send_capped(req, &mut |chunk| {
                seen = seen.saturating_add(chunk.len());
                seen <= max
            })
            .await
            .map_err(ApiError::transport)?;
        if seen > max || resp.body.len() > max {
            return Err(ApiError::invalid(format!(
                "the medium is larger than {} MB",
                max.div_ceil(1 << 20)
            )));
        }
        Ok(resp)
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
        self.call_capped(app, build, parse, None).await
    }

    /// [`Self::call`] reading at most `max` bytes of each answer.
    async fn call_capped<T>(
        &self,
        app: &App,
        build: impl Fn(&AccessToken) -> Result<HttpRequest, ApiError>,
        parse: impl Fn(&HttpResponse) -> Result<T, ApiError>,
        max: Option<usize>,
    ) -> Result<T, ApiError> {
        let token = self.token(app).await?;
        let first = parse(&self.exchange_capped(build(&token)?, max).await?);
        match first {
            Err(e) if e.class == ErrorClass::TokenInvalid => {
                self.tokens.invalidate(&token_key(app), &token).await;
                // Through the cache, so a cache that fetches for everyone (a Durable Object)
                // does it once; a cache slow to forget (KV) is bypassed.
                let mut fresh = self.token(app).await?;
                if fresh == token {
                    fresh = self.fetch_token(app).await?;
                }
                parse(&self.exchange_capped(build(&fresh)?, max).await?)
            }
            other => other,
        }
    }

    /// The app's details (`agent/get`): proves the token, the agent id and the trusted IP.
    pub async fn get_agent(&self, app: &App) -> Result<api::AgentInfo, ApiError> {
        self.call(
            app,
            |token| Ok(api::get_agent(self.api_base, token, app.agent_id)),
            api::parse_agent,
        )
        .await
    }

    /// Downloads a medium the app received (`media/get`), at most `max` bytes.
    pub async fn get_media(
        &self,
        app: &App,
        media_id: &str,
        max: usize,
    ) -> Result<api::Media, ApiError> {
        self.call_capped(
            app,
            |token| Ok(api::get_media(self.api_base, token, media_id)),
            api::parse_media,
            Some(max),
        )
        .await
    }

    /// Uploads a medium (`media/upload`) and returns its media id (valid three days).
    pub async fn upload(
        &self,
        app: &App,
        kind: api::MediaType,
        file_name: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<String, ApiError> {
        self.call(
            app,
            |token| api::upload_media(self.api_base, token, kind, file_name, mime, bytes.to_vec()),
            api::parse_upload,
        )
        .await
        .map(|u| u.media_id)
    }

    /// Sends one message to `to_user` (a UserID of the app's corp); with
    /// `duplicate_check_secs`, WeCom drops it if the same request arrived that recently (see
    /// [`api::duplicate_check_secs`]).
    pub async fn send(
        &self,
        app: &App,
        to_user: &str,
        content: &Content,
        duplicate_check_secs: Option<u32>,
    ) -> Result<SendReceipt, ApiError> {
        self.call(
            app,
            |token| {
                api::send_message(
                    self.api_base,
                    token,
                    app.agent_id,
                    to_user,
                    content,
                    duplicate_check_secs,
                )
            },
            api::parse_send,
        )
        .await
    }
}
