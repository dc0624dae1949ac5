//! WeCom's server API as data: each call is a request value, each response parses into a typed
//! result, and every errcode is classified into what the relay should do about it.
//!
//! Only the [`crate::ports::HttpClient`] port performs I/O. Requests carry the access token or
//! secret in their query, so their `Debug` prints the path only.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::http::{Body, FilePart, HttpRequest, HttpResponse, Method, TransportError};
use crate::ids::{AccessToken, AgentId, CorpId, CorpSecret};

/// The public API base. Users behind trusted-IP rules point `api_base` at a fixed-IP proxy.
pub const DEFAULT_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// The most bytes of UTF-8 that `text` and `markdown` content may have.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Refresh a cached token this long before it expires.
pub const TOKEN_REFRESH_MARGIN_SECS: u64 = 300;

/// What the relay should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 40014/42001/41001: drop the cached token, fetch a new one, retry once.
    TokenInvalid,
    /// -1, HTTP 5xx, timeouts, broken responses: retry with backoff.
    RetryLater,
    /// 45009/45033/45011, HTTP 429: back off (and lower concurrency), then retry.
    RateLimited,
    /// 60020: this host's egress IP is not among the app's trusted IPs. Retrying cannot help.
    IpNotTrusted,
    /// 40001/40013/40056/...: the app's settings are wrong. Report, do not loop.
    Config,
    /// 60011/81013/40003: the recipient cannot be reached through this app.
    Recipient,
    /// 45002: the content is too long (the relay splits before sending, so this is a bug).
    ContentTooLong,
    /// Anything else: the request itself is wrong. Do not retry.
    BadRequest,
}

impl ErrorClass {
    /// Whether trying the same request again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RetryLater | Self::RateLimited | Self::TokenInvalid
        )
    }
}

/// Classifies a WeCom errcode (never 0).
pub fn classify_errcode(errcode: i64) -> ErrorClass {
    match errcode {
        -1 => ErrorClass::RetryLater,
        40014 | 42001 | 41001 => ErrorClass::TokenInvalid,
        45009 | 45011 | 45033 => ErrorClass::RateLimited,
        60020 => ErrorClass::IpNotTrusted,
        40001 | 40013 | 40056 | 41002 | 41004 | 48002 | 60010 | 301002 => ErrorClass::Config,
        60011 | 81013 | 40003 | 81011 => ErrorClass::Recipient,
        45002 => ErrorClass::ContentTooLong,
        _ => ErrorClass::BadRequest,
    }
}

/// A failed API call: what WeCom (or the transport) said, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The classification.
    pub class: ErrorClass,
    /// WeCom's errcode, when the call got that far.
    pub errcode: Option<i64>,
    /// WeCom's errmsg, or a short description of the failure.
    pub errmsg: String,
    /// The HTTP status, when one arrived.
    pub http_status: Option<u16>,
    /// A server-requested delay before retrying.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(class: ErrorClass, errmsg: impl Into<String>) -> Self {
        Self {
            class,
            errcode: None,
            errmsg: errmsg.into(),
            http_status: None,
            retry_after_secs: None,
        }
    }

    /// From a transport failure.
    pub fn transport(e: TransportError) -> Self {
        let what = match e {
            TransportError::Connect => "could not connect to the api",
            TransportError::Timeout => "the api did not answer in time",
            TransportError::Io => "the connection to the api broke",
        };
        Self::new(ErrorClass::RetryLater, what)
    }

    /// From a request the relay refused to build (bad input).
    pub fn invalid(why: impl Into<String>) -> Self {
        Self::new(ErrorClass::BadRequest, why)
    }

    /// For 60020, the caller IP WeCom saw, taken from errmsg (`from ip: 1.2.3.4`).
    pub fn caller_ip(&self) -> Option<&str> {
        let at = self.errmsg.find("from ip:")? + "from ip:".len();
        let rest = self.errmsg[at..].trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        Some(&rest[..end]).filter(|ip| !ip.is_empty())
    }

    /// One line an operator can act on.
    pub fn explanation(&self) -> String {
        match self.class {
            ErrorClass::IpNotTrusted => format!(
                "WeCom refused the call because this host's egress IP{} is not in the app's trusted IPs (企业可信IP, errcode 60020). \
                 Add that IP in the admin console under the app's trusted IPs, or set api_base to a fixed-IP egress proxy whose IP is listed",
                self.caller_ip().map(|ip| format!(" ({ip})")).unwrap_or_default()
            ),
            ErrorClass::Config => {
                let code = self.errcode.unwrap_or_default();
                let what = match code {
                    40001 => "the corp_secret is wrong: copy the Secret of this very app (应用管理 → the app → Secret); each app has its own",
                    40013 => "the corp_id is wrong: it is the 企业ID under 我的企业 → 企业信息 (it starts with ww or wx)",
                    41002 => "corp_id is missing",
                    41004 => "corp_secret is missing",
                    40056 | 301002 => "the agent_id is wrong: it is the AgentId on the app's page in 应用管理",
                    48002 => "this API is not allowed for the app (its permissions in the console)",
                    _ => "check corp_id, corp_secret and agent_id for this app",
                };
                format!("WeCom rejected the app's settings (errcode {code}): {what}")
            }
            ErrorClass::TokenInvalid => "the access token was rejected; a new one is fetched".into(),
            ErrorClass::RateLimited => "WeCom's frequency or concurrency limit was hit; backing off".into(),
            ErrorClass::RetryLater if self.errcode.is_none() && self.http_status.is_none() => {
                "WeCom's API could not be reached: check DNS, the firewall, TLS interception, or api_base if it is a proxy".into()
            }
            ErrorClass::RetryLater => "WeCom is busy or unreachable; retrying with backoff".into(),
            ErrorClass::Recipient => "the recipient is outside the app's visible range (可见范围) or has no such UserID in this corp".into(),
            ErrorClass::ContentTooLong => "the content exceeds WeCom's limit".into(),
            ErrorClass::BadRequest => "WeCom rejected the request".into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.errcode, self.http_status) {
            (Some(code), _) => write!(f, "errcode {code}: {}", self.errmsg),
            (None, Some(status)) => write!(f, "http {status}: {}", self.errmsg),
            (None, None) => f.write_str(&self.errmsg),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApiError {}

fn url(base: &str, path: &str, query: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        ser.append_pair(k, v);
    }
    format!("{}{}?{}", base.trim_end_matches('/'), path, ser.finish())
}

/// The common envelope of every JSON answer.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Checks the HTTP status and errcode, then parses the body as `T`.
fn parse_json<T: for<'de> Deserialize<'de>>(resp: &HttpResponse) -> Result<T, ApiError> {
    if !(200..300).contains(&resp.status) {
        let class = match resp.status {
            429 => ErrorClass::RateLimited,
            500..=599 => ErrorClass::RetryLater,
            _ => ErrorClass::BadRequest,
        };
        let mut e = ApiError::new(class, "unexpected http status");
        e.http_status = Some(resp.status);
        e.retry_after_secs = resp.retry_after_secs;
        return Err(e);
    }
    let broken = || {
        let mut e = ApiError::new(
            ErrorClass::RetryLater,
            "the api answered with malformed json",
        );
        e.http_status = Some(resp.status);
        e
    };
    let status: Status = serde_json::from_slice(&resp.body).map_err(|_| broken())?;
    if status.errcode != 0 {
        let mut e = ApiError::new(classify_errcode(status.errcode), status.errmsg);
        e.errcode = Some(status.errcode);
        e.http_status = Some(resp.status);
        return Err(e);
    }
    serde_json::from_slice(&resp.body).map_err(|_| broken())
}

/// `GET /cgi-bin/gettoken`.
pub fn get_token(base: &str, corp_id: &CorpId, secret: &CorpSecret) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        headers: Vec::new(),
        url: url(
            base,
            "/cgi-bin/gettoken",
            &[
                ("corpid", corp_id.as_str()),
                ("corpsecret", secret.expose()),
            ],
        ),
        body: Body::Empty,
    }
}

/// A token from `gettoken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token.
    pub access_token: AccessToken,
    /// Its lifetime in seconds (7200).
    pub expires_in: u64,
}

impl TokenGrant {
    /// Unix time at which the token expires, given when it was fetched.
    pub fn expires_at(&self, fetched_at: u64) -> u64 {
        fetched_at.saturating_add(self.expires_in)
    }
}

/// How long before expiry a token with this lifetime is refreshed: the margin, but never more
/// than half the lifetime, so a short-lived token is still used before it is replaced.
pub fn refresh_margin(expires_in: u64) -> u64 {
    TOKEN_REFRESH_MARGIN_SECS.min(expires_in / 2)
}

/// Parses a `gettoken` answer.
pub fn parse_token(resp: &HttpResponse) -> Result<TokenGrant, ApiError> {
    #[derive(Deserialize)]
    struct Raw {
        access_token: String,
        #[serde(default = "default_expiry")]
        expires_in: u64,
    }
    fn default_expiry() -> u64 {
        7200
    }
    let raw: Raw = parse_json(resp)?;
    if raw.access_token.is_empty() || raw.access_token.len() > 512 {
        return Err(ApiError::new(
            ErrorClass::RetryLater,
            "gettoken returned no usable token",
        ));
    }
    Ok(TokenGrant {
        access_token: AccessToken::new(raw.access_token),
        expires_in: raw.expires_in,
    })
}

/// One article of a `news` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    /// Title.
    pub title: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The link.
    pub url: String,
    /// The picture.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub picurl: String,
}

/// The content of an outbound message; serialises as WeCom's `<msgtype>: {...}` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// `text` (at most 2048 bytes).
    Text {
        /// The text.
        content: String,
    },
    /// `markdown` (at most 2048 bytes; not rendered in the personal-WeChat plugin).
    Markdown {
        /// The markdown.
        content: String,
    },
    /// `image`.
    Image {
        /// From `media/upload`.
        media_id: String,
    },
    /// `voice`.
    Voice {
        /// From `media/upload`.
        media_id: String,
    },
    /// `file`.
    File {
        /// From `media/upload`.
        media_id: String,
    },
    /// `video`.
    Video {
        /// From `media/upload`.
        media_id: String,
        /// Title.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        title: String,
        /// Description.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
    /// `news`: 1 to 8 articles.
    News {
        /// The articles.
        articles: Vec<Article>,
    },
    /// `textcard`.
    Textcard {
        /// Title (at most 128 bytes).
        title: String,
        /// Description (at most 512 bytes).
        description: String,
        /// The link.
        url: String,
        /// Button text.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        btntxt: String,
    },
}

impl Content {
    /// The `msgtype` value.
    pub fn msg_type(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Markdown { .. } => "markdown",
            Self::Image { .. } => "image",
            Self::Voice { .. } => "voice",
            Self::File { .. } => "file",
            Self::Video { .. } => "video",
            Self::News { .. } => "news",
            Self::Textcard { .. } => "textcard",
        }
    }

    /// Checks WeCom's documented limits, so nothing is silently truncated on their side.
    pub fn validate(&self) -> Result<(), ApiError> {
        let too_long = |what: &str, len: usize, max: usize| {
            let mut e = ApiError::new(
                ErrorClass::ContentTooLong,
                format!("{what} is {len} bytes, the limit is {max}"),
            );
            e.errcode = Some(45002);
            Err(e)
        };
        match self {
            Self::Text { content } | Self::Markdown { content } => {
                if content.is_empty() {
                    return Err(ApiError::invalid("empty content"));
                }
                if content.len() > MAX_TEXT_BYTES {
                    return too_long("content", content.len(), MAX_TEXT_BYTES);
                }
            }
            Self::Image { media_id }
            | Self::Voice { media_id }
            | Self::File { media_id }
            | Self::Video { media_id, .. } => {
                if media_id.is_empty() {
                    return Err(ApiError::invalid("empty media_id"));
                }
            }
            Self::News { articles } => {
                if articles.is_empty() || articles.len() > 8 {
                    return Err(ApiError::invalid(format!(
                        "news takes 1 to 8 articles, got {}",
                        articles.len()
                    )));
                }
            }
            Self::Textcard {
                title, description, ..
            } => {
                if title.len() > 128 {
                    return too_long("title", title.len(), 128);
                }
                if description.len() > 512 {
                    return too_long("description", description.len(), 512);
                }
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct SendBody<'a> {
    touser: &'a str,
    msgtype: &'static str,
    agentid: u64,
    #[serde(flatten)]
    content: &'a Content,
    safe: u8,
    enable_duplicate_check: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_check_interval: Option<u32>,
}

/// The longest `duplicate_check_interval` WeCom takes: four hours.
pub const MAX_DUPLICATE_CHECK_SECS: u32 = 4 * 3600;

/// The `duplicate_check_interval` for one message of a job, in [600, 1800) seconds (WeCom's
/// default is 1800): long enough to cover every retry of the message, and different between
/// messages (a hash of `job` and `part`).
///
/// WeCom drops a message whose request JSON equals one it took within the interval. Every
/// attempt at one part builds the same JSON, so a retry after a send whose answer was lost
/// (a timeout, a cut connection, a 5xx from a proxy) is dropped if the first one arrived. Two
/// jobs that give the same answer build different JSON (the interval differs), so a
/// genuinely repeated answer still arrives.
pub fn duplicate_check_secs(job: &str, part: usize) -> u32 {
    // FNV-1a: stable across builds and platforms, which is all this needs.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in job.bytes().chain(part.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    600 + hash % 1200
}

/// `POST /cgi-bin/message/send` to one user of the app's corp; with `duplicate_check_secs`,
/// WeCom drops it if the same request arrived within that many seconds.
pub fn send_message(
    base: &str,
    token: &AccessToken,
    agent_id: AgentId,
    to_user: &str,
    content: &Content,
    duplicate_check_secs: Option<u32>,
) -> Result<HttpRequest, ApiError> {
    content.validate()?;
    if to_user.is_empty() {
        return Err(ApiError::invalid("no recipient"));
    }
    let body = SendBody {
        touser: to_user,
        msgtype: content.msg_type(),
        agentid: agent_id.0,
        content,
        safe: 0,
        enable_duplicate_check: u8::from(duplicate_check_secs.is_some()),
        duplicate_check_interval: duplicate_check_secs
            .map(|s| s.clamp(1, MAX_DUPLICATE_CHECK_SECS)),
    };
    Ok(HttpRequest {
        method: Method::Post,
        headers: Vec::new(),
        url: url(
            base,
            "/cgi-bin/message/send",
            &[("access_token", token.expose())],
        ),
        body: Body::Json(
            serde_json::to_string(&body)
                .map_err(|_| ApiError::invalid("unserialisable message"))?,
        ),
    })
}

/// What `message/send` answered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct SendReceipt {
    /// The message id, usable for recall.
    #[serde(default)]
    pub msgid: String,
    /// Recipients WeCom could not deliver to, `|`-separated.
    #[serde(default)]
    pub invaliduser: String,
}

/// Parses a `message/send` answer. An `invaliduser` naming the recipient is a failure.
pub fn parse_send(resp: &HttpResponse) -> Result<SendReceipt, ApiError> {
    let receipt: SendReceipt = parse_json(resp)?;
    if !receipt.invaliduser.is_empty() {
        let mut e = ApiError::new(
            ErrorClass::Recipient,
            format!("invalid user: {}", receipt.invaliduser),
        );
        e.errcode = Some(0);
        return Err(e);
    }
    Ok(receipt)
}

/// A POST of `json` to an AI bot message's `response_url` (already checked by
/// [`crate::aibot::response_url_target`]); it carries its own credentials, no token.
pub fn response_url_post(target: &str, json: String) -> HttpRequest {
    HttpRequest {
        method: Method::Post,
        url: target.into(),
        headers: Vec::new(),
        body: Body::Json(json),
    }
}

/// Parses a `response_url` answer: `{"errcode": 0, "errmsg": "ok"}`.
pub fn parse_response_url(resp: &HttpResponse) -> Result<(), ApiError> {
    parse_json::<serde::de::IgnoredAny>(resp).map(drop)
}

/// `GET /cgi-bin/agent/get`: the app's details. Subject to the trusted-IP check like every
/// call but `gettoken`, and it checks `agent_id`: what `api-check` asks before sending anything.
pub fn get_agent(base: &str, token: &AccessToken, agent_id: AgentId) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        headers: Vec::new(),
        url: url(
            base,
            "/cgi-bin/agent/get",
            &[
                ("access_token", token.expose()),
                ("agentid", &agent_id.0.to_string()),
            ],
        ),
        body: Body::Empty,
    }
}

/// What `agent/get` says of an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AgentInfo {
    /// The app's name in the console.
    #[serde(default)]
    pub name: String,
    /// Members the app may message directly (`allow_userinfos.user[].userid`).
    #[serde(
        default,
        rename = "allow_userinfos",
        deserialize_with = "visible_users"
    )]
    pub visible_users: Vec<String>,
}

fn visible_users<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize, Default)]
    struct Infos {
        #[serde(default)]
        user: Vec<User>,
    }
    #[derive(Deserialize)]
    struct User {
        userid: String,
    }
    let infos: Option<Infos> = Option::deserialize(d)?;
    Ok(infos
        .unwrap_or_default()
        .user
        .into_iter()
        .map(|u| u.userid)
        .collect())
}

/// Parses an `agent/get` answer.
pub fn parse_agent(resp: &HttpResponse) -> Result<AgentInfo, ApiError> {
    parse_json(resp)
}

/// The media kinds of `media/upload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    /// jpg/png, at most 10 MB.
    Image,
    /// amr, at most 2 MB and 60 s.
    Voice,
    /// mp4, at most 10 MB.
    Video,
    /// Any file, at most 20 MB.
    File,
}

impl MediaType {
    /// The `type` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Voice => "voice",
            Self::Video => "video",
            Self::File => "file",
        }
    }

    /// WeCom's size limit in bytes.
    pub fn max_bytes(self) -> usize {
        match self {
            Self::Image | Self::Video => 10 << 20,
            Self::Voice => 2 << 20,
            Self::File => 20 << 20,
        }
    }
}

/// `POST /cgi-bin/media/upload` with the file as multipart field `media`.
pub fn upload_media(
    base: &str,
    token: &AccessToken,
    kind: MediaType,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Result<HttpRequest, ApiError> {
    if bytes.len() <= 5 {
        return Err(ApiError::invalid("media must be larger than 5 bytes"));
    }
    if bytes.len() > kind.max_bytes() {
        return Err(ApiError::invalid(format!(
            "{} media is {} bytes, the limit is {}",
            kind.as_str(),
            bytes.len(),
            kind.max_bytes()
        )));
    }
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let ok = match kind {
        MediaType::Image => matches!(ext.as_str(), "jpg" | "jpeg" | "png"),
        MediaType::Voice => ext == "amr",
        MediaType::Video => ext == "mp4",
        MediaType::File => true,
    };
    if !ok {
        return Err(ApiError::invalid(format!(
            "{} media cannot be a .{ext} file",
            kind.as_str()
        )));
    }
    Ok(HttpRequest {
        method: Method::Post,
        headers: Vec::new(),
        url: url(
            base,
            "/cgi-bin/media/upload",
            &[("access_token", token.expose()), ("type", kind.as_str())],
        ),
        body: Body::Multipart(FilePart {
            field: "media".into(),
            filename: filename.to_owned(),
            content_type: content_type.to_owned(),
            bytes,
            fields: Vec::new(),
        }),
    })
}

/// What `media/upload` answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Uploaded {
    /// The media id, valid three days.
    pub media_id: String,
    /// Upload time as WeCom reports it (a string of digits).
    #[serde(default, deserialize_with = "crate::apps::string_or_number")]
    pub created_at: String,
}

/// Parses a `media/upload` answer.
pub fn parse_upload(resp: &HttpResponse) -> Result<Uploaded, ApiError> {
    parse_json(resp)
}

/// `GET /cgi-bin/media/get`.
pub fn get_media(base: &str, token: &AccessToken, media_id: &str) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        headers: Vec::new(),
        url: url(
            base,
            "/cgi-bin/media/get",
            &[("access_token", token.expose()), ("media_id", media_id)],
        ),
        body: Body::Empty,
    }
}

/// A downloaded medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Its MIME type.
    pub content_type: String,
    /// The file name from `Content-Disposition`, when given.
    pub filename: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Parses a `media/get` answer: bytes on success, JSON on error.
pub fn parse_media(resp: &HttpResponse) -> Result<Media, ApiError> {
    let content_type = resp.content_type.clone().unwrap_or_default();
    let is_json =
        content_type.starts_with("application/json") || content_type.starts_with("text/plain");
    if !(200..300).contains(&resp.status) || is_json {
        let _: Status = parse_json(resp)?;
        return Err(ApiError::new(
            ErrorClass::BadRequest,
            "media/get answered json without an error",
        ));
    }
    let filename = resp.content_disposition.as_deref().and_then(|d| {
        let at = d.find("filename=")? + "filename=".len();
        Some(d[at..].trim_matches(|c| c == '"' || c == ' ').to_string())
    });
    Ok(Media {
        content_type,
        filename,
        bytes: resp.body.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn tok() -> AccessToken {
        AccessToken::new("TOKEN/+=")
    }

    #[test]
    fn requests_encode_their_query_and_hide_it_in_debug() {
        let req = get_token(
            "http://127.0.0.1:9/",
            &CorpId::from("ww1"),
            &CorpSecret::new("s&cr=t"),
        );
        assert_eq!(
            req.url,
            "http://127.0.0.1:9/cgi-bin/gettoken?corpid=ww1&corpsecret=s%26cr%3Dt"
        );
        assert_eq!(req.query_param("corpsecret").as_deref(), Some("s&cr=t"));
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("cr"), "{dbg}");
        let req = get_media(DEFAULT_API_BASE, &tok(), "M 1");
        assert_eq!(req.path(), "https://qyapi.weixin.qq.com/cgi-bin/media/get");
        assert_eq!(req.query_param("media_id").as_deref(), Some("M 1"));
        assert_eq!(req.query_param("access_token").as_deref(), Some("TOKEN/+="));
    }

    #[test]
    fn send_body_matches_the_documented_shape() {
        let req = send_message(
            DEFAULT_API_BASE,
            &tok(),
            AgentId(1000002),
            "alice",
            &Content::Text {
                content: "hi".into(),
            },
            None,
        )
        .unwrap();
        let Body::Json(json) = &req.body else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"touser":"alice","msgtype":"text","agentid":1000002,"text":{"content":"hi"},"safe":0,"enable_duplicate_check":0})
        );
        let hi = Content::Text {
            content: "hi".into(),
        };
        let checked = |job: &str, part| {
            let secs = duplicate_check_secs(job, part);
            let req = send_message(DEFAULT_API_BASE, &tok(), AgentId(7), "a", &hi, Some(secs));
            let Body::Json(json) = req.unwrap().body else {
                panic!()
            };
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["enable_duplicate_check"], 1);
            assert!((600..1800).contains(&v["duplicate_check_interval"].as_u64().unwrap()));
            json
        };
        // Every attempt at one part is the same request; other parts and jobs differ.
        assert_eq!(checked("ww1:7:m:1", 0), checked("ww1:7:m:1", 0));
        assert_ne!(checked("ww1:7:m:1", 0), checked("ww1:7:m:2", 0));
        assert_ne!(checked("ww1:7:m:1", 0), checked("ww1:7:m:1", 1));
        let video = Content::Video {
            media_id: "m".into(),
            title: "t".into(),
            description: String::new(),
        };
        let req = send_message(DEFAULT_API_BASE, &tok(), AgentId(1), "a", &video, None).unwrap();
        let Body::Json(json) = &req.body else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["video"], serde_json::json!({"media_id":"m","title":"t"}));
        let card = Content::Textcard {
            title: "T".into(),
            description: "D".into(),
            url: "http://x".into(),
            btntxt: String::new(),
        };
        let req = send_message(DEFAULT_API_BASE, &tok(), AgentId(1), "a", &card, None).unwrap();
        let Body::Json(json) = &req.body else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["msgtype"], "textcard");
        assert_eq!(
            v["textcard"],
            serde_json::json!({"title":"T","description":"D","url":"http://x"})
        );
    }

    #[test]
    fn limits_are_enforced_before_sending() {
        let long = Content::Text {
            content: "字".repeat(683),
        }; // 2049 bytes
        let e = send_message(DEFAULT_API_BASE, &tok(), AgentId(1), "a", &long, None).unwrap_err();
        assert_eq!(e.class, ErrorClass::ContentTooLong);
        assert!(send_message(
            DEFAULT_API_BASE,
            &tok(),
            AgentId(1),
            "a",
            &Content::Text {
                content: "字".repeat(682)
            },
            None
        )
        .is_ok());
        assert!(send_message(
            DEFAULT_API_BASE,
            &tok(),
            AgentId(1),
            "a",
            &Content::News { articles: vec![] },
            None
        )
        .is_err());
        assert!(send_message(
            DEFAULT_API_BASE,
            &tok(),
            AgentId(1),
            "",
            &Content::Text {
                content: "x".into()
            },
            None
        )
        .is_err());
        assert!(upload_media(
            DEFAULT_API_BASE,
            &tok(),
            MediaType::Image,
            "a.png",
            "image/png",
            vec![0; 5]
        )
        .is_err());
        assert!(upload_media(
            DEFAULT_API_BASE,
            &tok(),
            MediaType::Voice,
            "a.amr",
            "audio/amr",
            vec![0; (2 << 20) + 1]
        )
        .is_err());
        assert!(upload_media(
            DEFAULT_API_BASE,
            &tok(),
            MediaType::Image,
            "a.gif",
            "image/gif",
            vec![0; 10]
        )
        .is_err());
        let req = upload_media(
            DEFAULT_API_BASE,
            &tok(),
            MediaType::File,
            "r.pdf",
            "application/pdf",
            vec![1; 10],
        )
        .unwrap();
        assert_eq!(req.query_param("type").as_deref(), Some("file"));
        assert!(
            matches!(&req.body, Body::Multipart(p) if p.field == "media" && p.filename == "r.pdf")
        );
    }

    #[test]
    fn responses_parse_and_errcodes_classify() {
        let grant = parse_token(&HttpResponse::json(
            r#"{"errcode":0,"errmsg":"ok","access_token":"AT","expires_in":7200}"#,
        ))
        .unwrap();
        assert_eq!(grant.access_token.expose(), "AT");
        assert_eq!(grant.expires_at(1000), 8200);
        assert_eq!(refresh_margin(7200), 300);
        assert_eq!(refresh_margin(30), 15);

        let cases = [
            (-1, ErrorClass::RetryLater),
            (40014, ErrorClass::TokenInvalid),
            (42001, ErrorClass::TokenInvalid),
            (45009, ErrorClass::RateLimited),
            (45033, ErrorClass::RateLimited),
            (60020, ErrorClass::IpNotTrusted),
            (40001, ErrorClass::Config),
            (60011, ErrorClass::Recipient),
            (81013, ErrorClass::Recipient),
            (45002, ErrorClass::ContentTooLong),
            (44004, ErrorClass::BadRequest),
        ];
        for (code, class) in cases {
            let e = parse_send(&HttpResponse::json(&format!(
                r#"{{"errcode":{code},"errmsg":"m"}}"#
            )))
            .unwrap_err();
            assert_eq!((e.errcode, e.class), (Some(code), class));
        }
        let ok = parse_send(&HttpResponse::json(
            r#"{"errcode":0,"errmsg":"ok","invaliduser":"","msgid":"X"}"#,
        ))
        .unwrap();
        assert_eq!(ok.msgid, "X");
        let partial = parse_send(&HttpResponse::json(
            r#"{"errcode":0,"errmsg":"ok","invaliduser":"bob"}"#,
        ))
        .unwrap_err();
        assert_eq!(partial.class, ErrorClass::Recipient);

        let busy = HttpResponse {
            status: 502,
            ..HttpResponse::default()
        };
        assert_eq!(parse_send(&busy).unwrap_err().class, ErrorClass::RetryLater);
        let limited = HttpResponse {
            status: 429,
            retry_after_secs: Some(3),
            ..HttpResponse::default()
        };
        assert_eq!(parse_send(&limited).unwrap_err().retry_after_secs, Some(3));
        let html = HttpResponse {
            status: 200,
            body: b"<html>".to_vec(),
            ..HttpResponse::default()
        };
        assert_eq!(
            parse_token(&html).unwrap_err().class,
            ErrorClass::RetryLater
        );
        assert_eq!(
            ApiError::transport(TransportError::Timeout).class,
            ErrorClass::RetryLater
        );
        assert!(parse_upload(&HttpResponse::json(
            r#"{"errcode":0,"errmsg":"","type":"image","media_id":"M","created_at":"1380000000"}"#
        ))
        .is_ok());
    }

    #[test]
    fn ip_not_trusted_explains_itself() {
        let e = parse_send(&HttpResponse::json(
            r#"{"errcode":60020,"errmsg":"not allow to access from your ip, hint: [1700000000_1_abc], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"}"#,
        ))
        .unwrap_err();
        assert_eq!(e.caller_ip(), Some("203.0.113.7"));
        let line = e.explanation();
        assert!(
            line.contains("203.0.113.7")
                && line.contains("trusted IPs")
                && line.contains("api_base"),
            "{line}"
        );
        assert!(!e.class.is_retryable());
        for (code, says) in [
            (40001, "corp_secret is wrong"),
            (40013, "corp_id is wrong"),
            (40056, "agent_id is wrong"),
        ] {
            let e = parse_token(&HttpResponse::json(&format!(
                r#"{{"errcode":{code},"errmsg":"x"}}"#
            )))
            .unwrap_err();
            assert!(
                e.explanation().contains(says),
                "{code}: {}",
                e.explanation()
            );
        }
        let unreachable = ApiError::transport(TransportError::Connect);
        assert!(unreachable.explanation().contains("could not be reached"));
    }

    #[test]
    fn media_download() {
        let ok = HttpResponse {
            status: 200,
            content_type: Some("image/jpeg".into()),
            content_disposition: Some(r#"attachment; filename="a.jpg""#.into()),
            body: vec![1, 2, 3],
            ..HttpResponse::default()
        };
        let m = parse_media(&ok).unwrap();
        assert_eq!((m.filename.as_deref(), m.bytes.len()), (Some("a.jpg"), 3));
        let err = HttpResponse::json(r#"{"errcode":40007,"errmsg":"invalid media_id"}"#);
        assert_eq!(parse_media(&err).unwrap_err().errcode, Some(40007));
    }
}
