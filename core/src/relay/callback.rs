//! The callback pipeline: from an HTTP request to a response plus follow-up work, as data.
//!
//! [`verify_url`] answers `GET`; [`handle_callback`] takes a `POST` through [`open_callback`],
//! [`decide`], the dedup claim and the job sink, and says what became of it as an [`Outcome`].
//!
//! Order of checks on `POST`: size, query, envelope, signature and decryption (routing),
//! timestamp window, message XML. Unauthenticated input never reaches the window or the parser.

use alloc::borrow::{Cow, ToOwned};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::apps::{RouteError, SignedQuery};
use crate::config::Settings;
use crate::http::BodyError;
use crate::ids::ScopedUser;
use crate::job::{AgentInput, Job, JobKind};
use crate::media;
use crate::policy::Access;
use crate::ports::{Claim, DedupStore, JobSink, SinkError, StoreError};
use crate::replay::{dedup_key, ReplayError};
use crate::xml::{parse_envelope_bytes, parse_message, Event, Message, MessageBody, XmlError};

pub use crate::http::MAX_BODY_BYTES;

/// How long a denied user waits between two deny notices.
pub const DENY_NOTICE_INTERVAL_SECS: u64 = 3600;

/// Why a callback was refused. The log gets [`fmt::Display`]; the client gets only the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The body was not read whole: too large, too slow, or cut off.
    Body(BodyError),
    /// The query lacks a parameter.
    Query(RouteError),
    /// The body is not a WeCom envelope.
    Envelope(XmlError),
    /// No app verifies the signature.
    Signature,
    /// Decryption failed or the receive id matches no app.
    Decrypt(RouteError),
    /// Outside the replay window.
    Stale(ReplayError),
    /// The decrypted message is not valid WeCom XML.
    Message(XmlError),
    /// The decrypted `ToUserName` is not the app's corp.
    CorpMismatch,
    /// The decrypted `AgentID` is not the app's, or a message lacks one.
    AgentMismatch,
    /// An AI bot's body is not its JSON envelope.
    Json(String),
    /// An AI bot's decrypted callback is not understood.
    BotMessage(crate::aibot::MessageError),
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Body(e) => e.status(),
            Self::Query(RouteError::QueryTooLong) => 414,
            Self::Signature => 403,
            _ => 400,
        }
    }

    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Body(BodyError::TooLarge) => "too_large",
            Self::Body(BodyError::TimedOut) => "body_timeout",
            Self::Body(BodyError::Broken) => "body_broken",
            Self::Query(_) => "bad_query",
            Self::Envelope(_) => "bad_envelope",
            Self::Signature => "bad_signature",
            Self::Decrypt(_) => "bad_ciphertext",
            Self::Stale(_) => "stale",
            Self::Message(_) => "bad_message",
            Self::CorpMismatch => "corp_mismatch",
            Self::AgentMismatch => "agent_mismatch",
            Self::Json(_) => "bad_envelope",
            Self::BotMessage(_) => "bad_message",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Body(e) => write!(f, "{e}"),
            Self::Query(e) | Self::Decrypt(e) => write!(f, "{e}"),
            Self::Envelope(e) => write!(f, "envelope: {e}"),
            Self::Signature => f.write_str("no app verifies the signature"),
            Self::Stale(e) => write!(f, "replay window: {e}"),
            Self::Message(e) => write!(f, "message: {e}"),
            Self::CorpMismatch => f.write_str("message corp differs from the app's"),
            Self::AgentMismatch => f.write_str("message AgentID is not the app's"),
            Self::Json(e) => write!(f, "envelope: {e}"),
            Self::BotMessage(e) => write!(f, "message: {e}"),
        }
    }
}

/// The rejection for a query or routing failure (shared by apps and bots).
pub(crate) fn route_rejection(e: RouteError) -> Rejection {
    match e {
        RouteError::MissingParam(_)
        | RouteError::DuplicateParam(_)
        | RouteError::BadParam(_)
        | RouteError::QueryTooLong => Rejection::Query(e),
        RouteError::Signature => Rejection::Signature,
        other => Rejection::Decrypt(other),
    }
}

/// URL verification: the plaintext echo to answer with, and the app that verified.
pub fn verify_url(settings: &Settings, raw_query: &str) -> Result<(usize, String), Rejection> {
    let q = SignedQuery::parse(raw_query).map_err(Rejection::Query)?;
    let echostr = q
        .echostr
        .as_deref()
        .ok_or(Rejection::Query(RouteError::MissingParam("echostr")))?;
    let routed = settings.apps.route(&q, echostr).map_err(route_rejection)?;
    let app = routed.app;
    let echo = routed.into_plaintext().map_err(route_rejection)?;
    Ok((app, echo))
}

/// A verified, decrypted, parsed callback, its message borrowed from the decrypted XML.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound<'a> {
    /// Index of the app in `settings.apps`.
    pub app: usize,
    /// The message (its `to_user_name` is the app's corp, checked).
    pub message: Message<'a>,
    /// The dedup key.
    pub dedup_key: String,
}

impl Inbound<'_> {
    /// The sender, scoped by corp.
    pub fn user(&self) -> ScopedUser {
        ScopedUser::new(
            self.message.to_user_name.as_ref(),
            self.message.from_user_name.as_ref(),
        )
    }
}

/// Verifies, decrypts, routes and parses a callback `POST`. The decrypted XML goes into
/// `plain` (its old contents are dropped), which the message borrows from: reading it copies
/// none of its text.
pub fn open_callback<'p>(
    settings: &Settings,
    raw_query: &str,
    body: &[u8],
    now: u64,
    plain: &'p mut Vec<u8>,
) -> Result<Inbound<'p>, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::Body(BodyError::TooLarge));
    }
    let q = SignedQuery::parse(raw_query).map_err(Rejection::Query)?;
    let envelope = parse_envelope_bytes(body).map_err(Rejection::Envelope)?;
    let routed = settings
        .apps
        .route(&q, &envelope.encrypt)
        .map_err(route_rejection)?;
    settings
        .replay
        .check_timestamp(&q.timestamp, now)
        .map_err(Rejection::Stale)?;
    let index = routed.app;
    let plaintext = routed.plaintext_in(plain).map_err(route_rejection)?;
    let message = parse_message(plaintext).map_err(Rejection::Message)?;
    let app = settings
        .apps
        .get(index)
        .expect("route returns a valid index");
    if message.to_user_name.as_ref() != app.corp_id.as_str() {
        return Err(Rejection::CorpMismatch);
    }
    // Users' messages always name the app; some events (contact changes) do not. (No two
    // apps share a token and key, so the app that decrypted it is the only candidate.)
    let agent_ok = match message.agent_id.as_deref() {
        Some(id) => id.trim().parse() == Ok(app.agent_id.0),
        None => matches!(message.body, MessageBody::Event(_)),
    };
    if !agent_ok {
        return Err(Rejection::AgentMismatch);
    }
    let dedup_key = dedup_key(&message);
    Ok(Inbound {
        app: index,
        message,
        dedup_key,
    })
}

/// What to do with an opened callback.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Claim [`Job::id`] in the dedup store, enqueue the job, then answer 200.
    Process(Job),
    /// The user is not allowed. If `notice` is set, claim its key for an hour and, if fresh,
    /// enqueue it.
    Deny {
        /// The notice job, when a deny message is configured.
        notice: Option<Job>,
        /// The user.
        user: ScopedUser,
    },
    /// `enter_agent`: claim `notice.id` for `ttl` seconds (the rest of the user's day) and, if
    /// fresh, enqueue the welcome.
    Welcome {
        /// The welcome notice.
        notice: Job,
        /// How long the claim lasts.
        ttl: u64,
    },
    /// Nothing to do (events, unknown types); answer 200.
    Ignore {
        /// Why, as a metrics label.
        why: &'static str,
        /// The user.
        user: ScopedUser,
    },
}

/// The offset of the corp's time zone (China Standard Time, UTC+8): "once a day" means a
/// day there.
pub const CORP_UTC_OFFSET_SECS: u64 = 8 * 3600;

/// The dedup key that limits an app's welcome to once per user per day, and how long it
/// must live (until that day ends, at least a minute).
pub fn welcome_key(app: &str, user: &ScopedUser, at: u64) -> (String, u64) {
    let local = at.saturating_add(CORP_UTC_OFFSET_SECS);
    let day = local / 86_400;
    let left = 86_400 - local % 86_400;
    (format!("welcome:{app}:{}:{day}", user.key()), left.max(60))
}

/// The dedup key that rate-limits deny notices to one per user per hour.
pub fn deny_notice_key(user: &ScopedUser) -> String {
    format!("deny:{}", user.key())
}

/// Decides what an opened callback leads to, copying out of the borrowed message only what
/// the job keeps (a field split across CDATA sections, already a copy, moves).
pub fn decide(settings: &Settings, inbound: Inbound<'_>) -> Decision {
    let Inbound {
        app,
        message,
        dedup_key,
    } = inbound;
    let app = settings
        .apps
        .get(app)
        .expect("inbound carries a valid index");
    let user = ScopedUser::new(app.corp_id.as_str(), message.from_user_name);
    let create_time = message.create_time;
    let input = match message.body {
        MessageBody::Text { content } => AgentInput::Text {
            text: content.into_owned(),
        },
        MessageBody::Image { pic_url, media_id } => AgentInput::Image {
            media_id: media_id.into_owned(),
            pic_url: pic_url.into_owned(),
        },
        MessageBody::Voice {
            media_id,
            format,
            recognition,
        } => AgentInput::Voice {
            media_id: media_id.into_owned(),
            format: format.into_owned(),
            transcript: recognition.map(Cow::into_owned),
        },
        MessageBody::Video {
            media_id,
            thumb_media_id,
        } => AgentInput::Video {
            media_id: media_id.into_owned(),
            thumb_media_id: thumb_media_id.into_owned(),
        },
        MessageBody::File {
            media_id,
            file_name,
            file_size,
        } => AgentInput::File {
            media_id: media_id.into_owned(),
            file_name: media::clean_name(&file_name),
            file_size,
        },
        MessageBody::Location {
            latitude,
            longitude,
            label,
            ..
        } => AgentInput::Location {
            latitude,
            longitude,
            label: label.into_owned(),
        },
        MessageBody::Link {
            title,
            description,
            url,
            ..
        } => AgentInput::Link {
            title: title.into_owned(),
            description: description.into_owned(),
            url: url.into_owned(),
        },
        MessageBody::Event(Event::Click { key }) if settings.menu_commands.contains_key(&key) => {
            AgentInput::Text {
                text: settings.menu_commands[key.as_str()].clone(),
            }
        }
        MessageBody::Event(Event::Click { .. }) if !settings.forward_events => {
            return Decision::Ignore {
                why: "unmapped_click",
                user,
            }
        }
        MessageBody::Event(Event::EnterAgent { .. })
            if !settings.forward_events
                || app.welcome.is_some()
                || settings.welcome_message.is_some() =>
        {
            let welcome = app
                .welcome
                .as_deref()
                .or(settings.welcome_message.as_deref());
            return match welcome {
                Some(text)
                    if !text.trim().is_empty()
                        && settings.policy.check(&user) == Access::Allowed =>
                {
                    let (key, ttl) = welcome_key(&app.name, &user, create_time);
                    Decision::Welcome {
                        ttl,
                        notice: Job {
                            id: key,
                            app: app.name.clone(),
                            agent_id: app.agent_id,
                            user,
                            create_time,
                            kind: JobKind::Notice {
                                text: text.to_owned(),
                            },
                        },
                    }
                }
                _ => Decision::Ignore { why: "event", user },
            };
        }
        // Any other event goes to a webhook agent as it came, and is otherwise ignored.
        MessageBody::Event(event) if settings.forward_events => AgentInput::Event { event },
        MessageBody::Event(Event::Unknown { .. }) => {
            return Decision::Ignore {
                why: "unknown_event",
                user,
            }
        }
        MessageBody::Event(_) => return Decision::Ignore { why: "event", user },
        MessageBody::Unknown { .. } => {
            return Decision::Ignore {
                why: "unknown_type",
                user,
            }
        }
    };
    if settings.policy.check(&user) == Access::Denied {
        let notice = settings.deny_message.as_ref().map(|text| Job {
            id: deny_notice_key(&user),
            app: app.name.clone(),
            agent_id: app.agent_id,
            user: user.clone(),
            create_time,
            kind: JobKind::Notice {
                text: text.to_owned(),
            },
        });
        return Decision::Deny { notice, user };
    }
    Decision::Process(Job {
        id: dedup_key,
        app: app.name.clone(),
        agent_id: app.agent_id,
        user,
        create_time,
        kind: JobKind::Answer { input },
    })
}

/// What became of a callback `POST`: the HTTP answer plus what to log and count.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Refused before any state changed.
    Rejected(Rejection),
    /// Claimed and handed to the sink.
    Accepted {
        /// The job id.
        job: String,
        /// The sender.
        user: ScopedUser,
    },
    /// Already claimed: a WeCom retry or a replay inside the TTL.
    Duplicate {
        /// The job id.
        job: String,
    },
    /// Not on the allowlist.
    Denied {
        /// The sender.
        user: ScopedUser,
        /// Whether a deny notice was queued.
        notice: bool,
    },
    /// `enter_agent`: the welcome was queued (at most once a day), or not.
    Welcomed {
        /// The user.
        user: ScopedUser,
        /// Whether the welcome went to the sink.
        sent: bool,
    },
    /// Nothing to do.
    Ignored {
        /// The sender.
        user: ScopedUser,
        /// Why.
        why: &'static str,
    },
    /// The dedup store failed: left for WeCom to retry.
    StoreFailed(StoreError),
    /// The sink refused: the claim was released, left for WeCom to retry.
    NotQueued {
        /// The job id.
        job: String,
        /// Why.
        error: SinkError,
    },
}

impl Outcome {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Rejected(r) => r.status(),
            Self::StoreFailed(_) | Self::NotQueued { .. } => 503,
            _ => 200,
        }
    }

    /// The body: `success` for 200, empty otherwise.
    pub fn body(&self) -> &'static str {
        if self.status() == 200 {
            "success"
        } else {
            ""
        }
    }

    /// A metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.outcome(),
            Self::Accepted { .. } => "accepted",
            Self::Duplicate { .. } => "duplicate",
            Self::Denied { .. } => "denied",
            Self::Ignored { .. } => "ignored",
            Self::Welcomed { .. } => "welcomed",
            Self::StoreFailed(_) => "store_error",
            Self::NotQueued { .. } => "not_queued",
        }
    }

    /// Whether this deserves a warning rather than an info line.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Self::Rejected(_) | Self::StoreFailed(_) | Self::NotQueued { .. }
        )
    }

    /// Whether it is routine enough for debug level: WeCom's retries of a message already
    /// accepted (a line each would be a write per request on the hottest path; the
    /// `duplicates` metric counts them).
    pub fn is_chatter(&self) -> bool {
        matches!(self, Self::Duplicate { .. })
    }
}

impl fmt::Display for Outcome {
    /// The log line both twins write. Never includes message content or secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "callback refused ({}): {r}", r.status()),
            Self::Accepted { job, user } => write!(f, "callback accepted job={job} user={user}"),
            Self::Duplicate { job } => write!(f, "duplicate callback acknowledged job={job}"),
            Self::Denied { user, notice } => {
                write!(f, "denied by the access policy user={user} notice={notice}")
            }
            Self::Ignored { user, why } => write!(
                f,
                "callback acknowledged, nothing to do ({why}) user={user}"
            ),
            Self::Welcomed { user, sent } => write!(
                f,
                "enter_agent acknowledged user={user} welcome={}",
                if *sent {
                    "queued"
                } else {
                    "already sent today"
                }
            ),
            Self::StoreFailed(e) => write!(
                f,
                "dedup store failed, callback left for WeCom to retry: {e}"
            ),
            Self::NotQueued { job, error } => write!(
                f,
                "job not queued, callback left for WeCom to retry job={job}: {}",
                error.0
            ),
        }
    }
}

/// The whole `POST` path: open, decide, claim, submit. A message counts as seen only once its
/// job was handed over: if the sink refuses, the claim is released so WeCom's retry gets in.
pub async fn handle_callback<D: DedupStore, S: JobSink>(
    settings: &Settings,
    dedup: &D,
    sink: &S,
    raw_query: &str,
    body: &[u8],
    now: u64,
) -> Outcome {
    let mut plain = Vec::new();
    let inbound = match open_callback(settings, raw_query, body, now, &mut plain) {
        Ok(inbound) => inbound,
        Err(r) => return Outcome::Rejected(r),
    };
    match decide(settings, inbound) {
        Decision::Process(job) => match dedup
            .claim(&job.id, now, settings.replay.dedup_ttl_secs())
            .await
        {
            Ok(Claim::Duplicate) => Outcome::Duplicate { job: job.id },
            Err(e) => Outcome::StoreFailed(e),
            Ok(Claim::Fresh) => {
                let (id, user) = (job.id.clone(), job.user.clone());
                match sink.submit(job).await {
                    Ok(()) => Outcome::Accepted { job: id, user },
                    Err(error) => {
                        let _ = dedup.release(&id).await;
                        Outcome::NotQueued { job: id, error }
                    }
                }
            }
        },
        Decision::Deny { notice, user } => {
            let mut sent = false;
            if let Some(notice) = notice {
                if let Ok(Claim::Fresh) = dedup
                    .claim(&notice.id, now, DENY_NOTICE_INTERVAL_SECS)
                    .await
                {
                    sent = sink.submit(notice).await.is_ok();
                }
            }
            Outcome::Denied { user, notice: sent }
        }
        Decision::Welcome { notice, ttl } => {
            let user = notice.user.clone();
            let sent = match dedup.claim(&notice.id, now, ttl).await {
                Ok(Claim::Fresh) => sink.submit(notice).await.is_ok(),
                _ => false,
            };
            Outcome::Welcomed { user, sent }
        }
        Decision::Ignore { why, user } => Outcome::Ignored { user, why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use alloc::string::ToString;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn official() -> (Settings, VectorSet) {
        let set = vectors().remove(0);
        (vector_settings(&set, "chenjiashun"), set)
    }

    #[test]
    fn official_vector_end_to_end_decision() {
        let (settings, set) = official();
        let (app, echo) = verify_url(&settings, &set.verify_url.query).unwrap();
        assert_eq!(
            (app, echo.as_str()),
            (0, set.verify_url.expected_body.as_str())
        );
        let now = set.callback.timestamp.parse::<u64>().unwrap() + 5;
        let mut plain = Vec::new();
        let inbound = open_callback(
            &settings,
            &set.callback.query,
            set.callback.body.as_bytes(),
            now,
            &mut plain,
        )
        .unwrap();
        assert_eq!(
            inbound.user().to_string(),
            format!("{}:ChenJiaShun", set.corp_id)
        );
        match decide(&settings, inbound) {
            Decision::Process(job) => {
                assert_eq!(
                    job.kind,
                    JobKind::Answer {
                        input: AgentInput::Text {
                            text: "你好".into()
                        }
                    }
                );
                assert_eq!(
                    job.id,
                    format!("{}:{}:m:1456453720", set.corp_id, set.agent_id)
                );
                let json = serde_json::to_string(&job).unwrap();
                assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), job);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejections_carry_the_right_status() {
        let (settings, set) = official();
        let now = set.callback.timestamp.parse::<u64>().unwrap();
        let body = set.callback.body.as_bytes();
        let status = |q: &str, b: &[u8], now: u64| {
            open_callback(&settings, q, b, now, &mut Vec::new())
                .unwrap_err()
                .status()
        };
        assert_eq!(
            status(&set.callback.query, &[b' '; MAX_BODY_BYTES + 1], now),
            413
        );
        assert_eq!(status("timestamp=1&nonce=2", body, now), 400);
        assert_eq!(status(&set.callback.query, b"<xml>", now), 400);
        assert_eq!(status(&set.callback.query, &[0xff, 0xfe], now), 400);
        let tampered = set.callback.query.replace("nonce=", "nonce=9");
        assert_eq!(status(&tampered, body, now), 403);
        assert_eq!(status(&set.callback.query, body, now + 601), 400);
        assert_eq!(
            open_callback(
                &settings,
                &set.callback.query,
                body,
                now + 601,
                &mut Vec::new()
            )
            .unwrap_err()
            .outcome(),
            "stale"
        );
        assert_eq!(
            verify_url(&settings, "msg_signature=a&timestamp=1&nonce=2")
                .unwrap_err()
                .status(),
            400
        );
        let bad = set
            .verify_url
            .query
            .replace("msg_signature=0", "msg_signature=1");
        assert_eq!(verify_url(&settings, &bad).unwrap_err().status(), 403);
    }

    #[test]
    fn denied_users_get_at_most_a_notice_and_events_are_ignored() {
        let (mut settings, _) = official();
        let crypt = settings.apps.get(0).unwrap().crypt.clone();
        let send = |settings: &Settings, inner: &str| {
            let xml = format!(
                "<xml><ToUserName>{}</ToUserName><FromUserName>mallory</FromUserName><CreateTime>100</CreateTime>{inner}<AgentID>1000002</AgentID></xml>",
                crypt.receive_id()
            );
            let sealed = crypt.encrypt(&xml, &[3; 16], "100", "n").unwrap();
            let body =
                crate::xml::callback_envelope_xml(crypt.receive_id(), &sealed.encrypt, "1000002");
            let q = format!("msg_signature={}&timestamp=100&nonce=n", sealed.signature);
            let mut plain = Vec::new();
            let inbound = open_callback(settings, &q, body.as_bytes(), 100, &mut plain).unwrap();
            decide(settings, inbound)
        };
        let text = "<MsgType>text</MsgType><Content>hi</Content><MsgId>5</MsgId>";
        assert!(matches!(
            send(&settings, text),
            Decision::Deny { notice: None, .. }
        ));
        settings.deny_message = Some("not for you".into());
        match send(&settings, text) {
            Decision::Deny {
                notice: Some(job), ..
            } => {
                assert_eq!(job.id, format!("deny:{}:mallory", crypt.receive_id()));
                assert_eq!(
                    job.kind,
                    JobKind::Notice {
                        text: "not for you".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            send(
                &settings,
                "<MsgType>event</MsgType><Event>enter_agent</Event>"
            ),
            Decision::Ignore { why: "event", .. }
        ));
        assert!(matches!(
            send(&settings, "<MsgType>hologram</MsgType>"),
            Decision::Ignore {
                why: "unknown_type",
                ..
            }
        ));
    }

    #[test]
    fn welcomes_once_a_day_clicks_map_to_text_and_voice_brings_its_transcript() {
        let (mut settings, _) = official();
        let crypt = settings.apps.get(0).unwrap().crypt.clone();
        let user = "chenjiashun";
        let send = |settings: &Settings, inner: &str, at: u64| {
            let xml = format!(
                "<xml><ToUserName>{}</ToUserName><FromUserName>{user}</FromUserName><CreateTime>{at}</CreateTime>{inner}<AgentID>1000002</AgentID></xml>",
                crypt.receive_id()
            );
            let sealed = crypt.encrypt(&xml, &[3; 16], &at.to_string(), "n").unwrap();
            let body =
                crate::xml::callback_envelope_xml(crypt.receive_id(), &sealed.encrypt, "1000002");
            let q = format!("msg_signature={}&timestamp={at}&nonce=n", sealed.signature);
            let mut plain = Vec::new();
            let inbound = open_callback(settings, &q, body.as_bytes(), at, &mut plain).unwrap();
            decide(settings, inbound)
        };
        let enter = "<MsgType>event</MsgType><Event>enter_agent</Event>";
        // No welcome configured: nothing.
        assert!(matches!(
            send(&settings, enter, 100),
            Decision::Ignore { why: "event", .. }
        ));
        settings.welcome_message = Some("welcome!".into());
        // 2023-11-14 23:59:59 and 2023-11-15 00:00:00 in UTC+8: two days.
        let (before, after) = (1_699_977_599, 1_699_977_600);
        let key_at = |at| match send(&settings, enter, at) {
            Decision::Welcome { notice, ttl } => {
                assert_eq!(
                    notice.kind,
                    JobKind::Notice {
                        text: "welcome!".into()
                    }
                );
                (notice.id, ttl)
            }
            other => panic!("{other:?}"),
        };
        let (k1, ttl1) = key_at(before);
        let (k2, ttl2) = key_at(after);
        assert_ne!(k1, k2, "a new day, a new welcome");
        assert_eq!((ttl1, ttl2), (60, 86_400));
        assert_eq!(key_at(after + 3600).0, k2, "once a day");
        // A menu click stands for its text; an unmapped one is ignored.
        let click = "<MsgType>event</MsgType><Event>click</Event><EventKey>K_HELP</EventKey>";
        assert!(matches!(
            send(&settings, click, 100),
            Decision::Ignore {
                why: "unmapped_click",
                ..
            }
        ));
        settings
            .menu_commands
            .insert("K_HELP".into(), "/help".into());
        match send(&settings, click, 100) {
            Decision::Process(job) => assert_eq!(
                job.kind,
                JobKind::Answer {
                    input: AgentInput::Text {
                        text: "/help".into()
                    }
                }
            ),
            other => panic!("{other:?}"),
        }
        // For a webhook agent, the events the relay has no use for arrive as they came.
        let scan = "<MsgType>event</MsgType><Event>scancode_waitmsg</Event><EventKey>K_SCAN</EventKey>\
                    <ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>PO-1234</ScanResult></ScanCodeInfo>";
        assert!(matches!(
            send(&settings, scan, 100),
            Decision::Ignore { why: "event", .. }
        ));
        settings.forward_events = true;
        match send(&settings, scan, 100) {
            Decision::Process(Job {
                kind: JobKind::Answer { input },
                ..
            }) => {
                assert_eq!(input.to_text(), "[event scancode_waitmsg]");
                let json = serde_json::to_value(&input).unwrap();
                assert_eq!(json["type"], "event", "{json}");
                assert!(json.to_string().contains("PO-1234"), "{json}");
            }
            other => panic!("{other:?}"),
        }
        let other = "<MsgType>event</MsgType><Event>K</Event><EventKey>K_OTHER</EventKey>";
        assert!(matches!(send(&settings, other, 100), Decision::Process(_)));
        settings.forward_events = false;
        // WeCom's transcript is what the agent reads.
        let voice = "<MsgType>voice</MsgType><MediaId>V</MediaId><Format>amr</Format><Recognition>明天开会</Recognition><MsgId>9</MsgId>";
        match send(&settings, voice, 100) {
            Decision::Process(Job {
                kind: JobKind::Answer { input },
                ..
            }) => {
                assert_eq!(input.to_text(), "明天开会")
            }
            other => panic!("{other:?}"),
        }
    }

    struct VecSink(std::sync::Mutex<alloc::vec::Vec<Job>>, bool);
    impl JobSink for VecSink {
        async fn submit(&self, job: Job) -> Result<(), SinkError> {
            if self.1 {
                return Err(SinkError("closed".into()));
            }
            self.0.lock().unwrap().push(job);
            Ok(())
        }
    }

    #[test]
    fn handle_callback_claims_only_what_it_could_queue() {
        use crate::ports::MemoryDedup;
        use crate::testing::block_on;
        let (settings, set) = official();
        let now = set.callback.timestamp.parse::<u64>().unwrap();
        let dedup = MemoryDedup::default();
        let closed = VecSink(Default::default(), true);
        let run = |sink: &VecSink| {
            block_on(handle_callback(
                &settings,
                &dedup,
                sink,
                &set.callback.query,
                set.callback.body.as_bytes(),
                now,
            ))
        };
        let refused = run(&closed);
        assert_eq!((refused.status(), refused.label()), (503, "not_queued"));
        let open = VecSink(Default::default(), false);
        let accepted = run(&open);
        assert_eq!(
            (accepted.status(), accepted.body(), accepted.label()),
            (200, "success", "accepted")
        );
        assert_eq!(run(&open).label(), "duplicate");
        assert_eq!(open.0.lock().unwrap().len(), 1);
        let line = accepted.to_string();
        assert!(
            line.contains("callback accepted") && !line.contains("你好"),
            "{line}"
        );
        let bad = block_on(handle_callback(&settings, &dedup, &open, "x=1", b"", now));
        assert_eq!(
            (bad.status(), bad.label(), bad.is_warning()),
            (400, "bad_query", true)
        );
    }
}
