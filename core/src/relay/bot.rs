//! The AI bot's HTTP face: URL verification, and callbacks answered with a stream (a message),
//! the stream's content so far (a refresh) or a welcome (`enter_chat`).
//!
//! Order of checks on `POST`, as for apps: size, query, envelope, signature and decryption,
//! timestamp window, message JSON. Unauthenticated input never reaches the window or the parser.

use alloc::format;
use alloc::string::String;
use core::fmt;

use serde::Deserialize;
use sha1::{Digest, Sha1};

use super::callback::{route_rejection, Rejection};
use super::Event;
use crate::aibot::reply::{seal_reply, stream_json, stream_reply_json, text_json};
use crate::aibot::stream::{StreamOp, UNKNOWN_STREAM_TEXT};
use crate::aibot::{parse_callback, Bot, BotCallback, BotEvent, BotMessage};
use crate::apps::{RouteError, SignedQuery};
use crate::config::Backend;
use crate::crypto::to_hex;
use crate::http::{Answer, Incoming};
use crate::ids::{AgentId, ScopedUser};
use crate::job::{Job, JobKind};
use crate::policy::Access;
use crate::ports::{Claim, Clock, DedupStore, JobSink, Platform, Random, StoreError, StreamStore};
use crate::Relay;

/// What became of a bot callback.
#[derive(Debug, Clone, PartialEq)]
pub enum BotOutcome {
    /// Refused before any state changed.
    Rejected(Rejection),
    /// A message was accepted and its stream opened.
    Accepted {
        /// The bot.
        bot: String,
        /// The job id.
        job: String,
        /// The sender, `aibotid:userid`.
        user: ScopedUser,
    },
    /// A message seen before (WeCom's retry): answered with its stream.
    Duplicate {
        /// The job id.
        job: String,
    },
    /// A refresh was answered.
    Refreshed {
        /// The stream.
        stream: String,
        /// Bytes shown.
        bytes: usize,
        /// Whether this was the last answer.
        finish: bool,
    },
    /// A refresh named a stream the relay does not hold.
    UnknownStream {
        /// The stream.
        stream: String,
    },
    /// The sender is not allowed.
    Denied {
        /// The sender.
        user: ScopedUser,
    },
    /// `enter_chat`, answered with the welcome (or nothing).
    Welcomed {
        /// The bot.
        bot: String,
        /// Whether a welcome went back.
        sent: bool,
    },
    /// A user rated an answer.
    Feedback {
        /// The bot.
        bot: String,
        /// The answer's feedback id.
        id: String,
        /// 1 accurate, 2 inaccurate, 3 cancelled.
        kind: u8,
    },
    /// Nothing to do.
    Ignored {
        /// The bot.
        bot: String,
        /// What it was.
        what: String,
    },
    /// A store failed: left for WeCom to retry.
    StoreFailed(StoreError),
    /// The sink refused: the claim was released, left for WeCom to retry.
    NotQueued {
        /// The job id.
        job: String,
        /// Why.
        error: String,
    },
}

impl BotOutcome {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Rejected(r) => r.status(),
            Self::StoreFailed(_) | Self::NotQueued { .. } => 503,
            _ => 200,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.outcome(),
            Self::Accepted { .. } => "accepted",
            Self::Duplicate { .. } => "duplicate",
            Self::Refreshed { .. } => "refreshed",
            Self::UnknownStream { .. } => "unknown_stream",
            Self::Denied { .. } => "denied",
            Self::Welcomed { .. } => "welcomed",
            Self::Feedback { .. } => "feedback",
            Self::Ignored { .. } => "ignored",
            Self::StoreFailed(_) => "store_failed",
            Self::NotQueued { .. } => "not_queued",
        }
    }

    /// Whether it deserves a warning.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Self::Rejected(_)
                | Self::UnknownStream { .. }
                | Self::StoreFailed(_)
                | Self::NotQueued { .. }
        )
    }

    /// Whether it is routine enough for debug level (refreshes come every second).
    pub fn is_chatter(&self) -> bool {
        matches!(self, Self::Refreshed { finish: false, .. })
    }
}

impl fmt::Display for BotOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "bot callback refused ({}): {r}", r.status()),
            Self::Accepted { bot, job, user } => {
                write!(f, "bot message accepted bot={bot} job={job} user={user}")
            }
            Self::Duplicate { job } => write!(f, "bot message seen before job={job}"),
            Self::Refreshed {
                stream,
                bytes,
                finish,
            } => write!(
                f,
                "bot stream refreshed stream={stream} bytes={bytes} finish={finish}"
            ),
            Self::UnknownStream { stream } => {
                write!(f, "bot stream unknown stream={stream}: answered as expired")
            }
            Self::Denied { user } => write!(f, "bot message denied user={user}"),
            Self::Welcomed { bot, sent } => write!(f, "bot enter_chat bot={bot} welcome={sent}"),
            Self::Feedback { bot, id, kind } => {
                write!(f, "bot feedback bot={bot} id={id} type={kind}")
            }
            Self::Ignored { bot, what } => write!(f, "bot callback ignored bot={bot}: {what}"),
            Self::StoreFailed(e) => write!(f, "bot callback not accepted: store failed: {e}"),
            Self::NotQueued { job, error } => {
                write!(f, "bot message not accepted job={job}: {error}")
            }
        }
    }
}

/// The stream id of a bot's message: stable, so WeCom's retry of the message finds the same
/// stream on any replica.
pub fn stream_id(aibotid: &str, msgid: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(aibotid.as_bytes());
    sha.update(b"\n");
    sha.update(msgid.as_bytes());
    let digest: [u8; 20] = sha.finalize().into();
    to_hex(&digest[..12])
}

#[derive(Deserialize)]
struct Envelope {
    encrypt: String,
}

impl<P: Platform> Relay<P> {
    /// `GET` on a bot's path: the URL verification.
    pub(crate) fn verify_bot(&self, path: &str, query: &str) -> Answer {
        let verified = SignedQuery::parse(query)
            .map_err(route_rejection)
            .and_then(|q| {
                let echostr = q
                    .echostr
                    .clone()
                    .ok_or(Rejection::Query(RouteError::MissingParam("echostr")))?;
                let bot = self
                    .settings
                    .bots
                    .route(path, &q, &echostr)
                    .map_err(route_rejection)?;
                let plain = bot
                    .crypt()
                    .open_verified(&echostr)
                    .map_err(|e| Rejection::Decrypt(RouteError::Decrypt(e)))?;
                let plain = String::from_utf8(plain)
                    .map_err(|_| Rejection::Decrypt(RouteError::NotUtf8))?;
                Ok((bot.name.as_str(), plain))
            });
        match verified {
            Ok((bot, echo)) => {
                self.observe_request(&Event::Verified { app: bot });
                Answer::text(200, echo)
            }
            Err(rejection) => {
                self.observe_request(&Event::VerifyRefused(&rejection));
                Answer::text(rejection.status(), "")
            }
        }
    }

    /// `POST` on a bot's path.
    pub(crate) async fn bot_callback(&self, req: &Incoming<'_>) -> Answer {
        let (outcome, reply) = match self.open_bot(req) {
            Ok((bot, q, callback)) => self.bot_decide(bot, callback, &q.nonce).await,
            Err(rejection) => (BotOutcome::Rejected(rejection), None),
        };
        self.observe_request(&Event::Bot(&outcome));
        match reply {
            Some(body) if outcome.status() == 200 => Answer::json(200, body),
            _ => Answer::text(outcome.status(), ""),
        }
    }

    fn open_bot<'q>(
        &self,
        req: &Incoming<'q>,
    ) -> Result<(&Bot, SignedQuery<'q>, BotCallback), Rejection> {
        let body = req.body.map_err(Rejection::Body)?;
        let q = SignedQuery::parse(req.query).map_err(route_rejection)?;
        let envelope: Envelope = serde_json::from_slice(body).map_err(|_| {
            Rejection::Json("body is not a JSON object with an \"encrypt\" string".into())
        })?;
        let bot = self
            .settings
            .bots
            .route(req.path, &q, &envelope.encrypt)
            .map_err(route_rejection)?;
        let plain = bot
            .crypt()
            .open_verified(&envelope.encrypt)
            .map_err(|e| Rejection::Decrypt(RouteError::Decrypt(e)))?;
        let now = self.platform.clock().now_unix();
        self.settings
            .replay
            .check_timestamp(&q.timestamp, now)
            .map_err(Rejection::Stale)?;
        let plain =
            core::str::from_utf8(&plain).map_err(|_| Rejection::Decrypt(RouteError::NotUtf8))?;
        let callback = parse_callback(plain).map_err(Rejection::BotMessage)?;
        Ok((bot, q, callback))
    }

    /// Seals a reply for the callback with `nonce`.
    fn seal(&self, bot: &Bot, plain: &str, nonce: &str) -> Option<String> {
        let mut random = [0u8; 16];
        self.platform.random().fill(&mut random);
        let now = self.platform.clock().now_unix();
        seal_reply(bot.crypt(), plain, &random, now, nonce).ok()
    }

    async fn bot_decide(
        &self,
        bot: &Bot,
        callback: BotCallback,
        nonce: &str,
    ) -> (BotOutcome, Option<String>) {
        let streams = self.platform.streams();
        let now = self.platform.clock().now_unix();
        match callback {
            BotCallback::Message(message) => self.bot_message(bot, message, nonce).await,
            BotCallback::Refresh { stream_id, .. } => {
                let poll = StreamOp::Poll {
                    limit_secs: self.settings.stream_limit_secs,
                };
                match streams.apply(&stream_id, &poll, now).await {
                    Err(e) => (BotOutcome::StoreFailed(e), None),
                    Ok(None) => {
                        let plain = stream_json(&stream_id, UNKNOWN_STREAM_TEXT, true);
                        let reply = self.seal(bot, &plain, nonce);
                        (BotOutcome::UnknownStream { stream: stream_id }, reply)
                    }
                    Ok(Some(stream)) => {
                        let plain = stream_reply_json(&stream_id, &stream);
                        let reply = self.seal(bot, &plain, nonce);
                        let outcome = BotOutcome::Refreshed {
                            stream: stream_id,
                            bytes: stream.content.len(),
                            finish: stream.finish(),
                        };
                        (outcome, reply)
                    }
                }
            }
            BotCallback::Event {
                event,
                aibotid,
                user_id,
            } => match event {
                BotEvent::EnterChat => {
                    let reply = bot
                        .welcome
                        .as_deref()
                        .and_then(|w| self.seal(bot, &text_json(w), nonce));
                    let outcome = BotOutcome::Welcomed {
                        bot: bot.name.clone(),
                        sent: reply.is_some(),
                    };
                    (outcome, reply)
                }
                BotEvent::Feedback { id, kind, content } => {
                    if matches!(self.agent.backend, Backend::Webhook { .. }) {
                        // Best effort: a rating lost to a full queue is not worth a retry.
                        let job = Job {
                            id: format!("bot:{aibotid}:feedback:{id}:{now}"),
                            app: bot.name.clone(),
                            agent_id: AgentId(0),
                            user: ScopedUser::new(aibotid.as_str(), user_id.as_str()),
                            create_time: now,
                            kind: JobKind::Feedback {
                                feedback_id: id.clone(),
                                rating: kind,
                                comment: content,
                            },
                        };
                        let _ = self.platform.sink().submit(job).await;
                    }
                    let outcome = BotOutcome::Feedback {
                        bot: bot.name.clone(),
                        id,
                        kind,
                    };
                    (outcome, None)
                }
                BotEvent::TemplateCard => (
                    BotOutcome::Ignored {
                        bot: bot.name.clone(),
                        what: "template_card_event".into(),
                    },
                    None,
                ),
                BotEvent::Other(what) => (
                    BotOutcome::Ignored {
                        bot: bot.name.clone(),
                        what: format!("event {what}"),
                    },
                    None,
                ),
            },
            BotCallback::Unknown { msgtype } => (
                BotOutcome::Ignored {
                    bot: bot.name.clone(),
                    what: format!("msgtype {msgtype}"),
                },
                None,
            ),
        }
    }

    async fn bot_message(
        &self,
        bot: &Bot,
        message: BotMessage,
        nonce: &str,
    ) -> (BotOutcome, Option<String>) {
        let user = ScopedUser::new(message.aibotid.as_str(), message.user_id.as_str());
        let stream = stream_id(&message.aibotid, &message.msgid);
        if self.settings.policy.check(&user) == Access::Denied {
            // The stream ends at once: with the deny message, or empty.
            let text = self.settings.deny_message.as_deref().unwrap_or_default();
            let reply = self.seal(bot, &stream_json(&stream, text, true), nonce);
            return (BotOutcome::Denied { user }, reply);
        }
        let now = self.platform.clock().now_unix();
        let key = format!("bot:{}:{}", message.aibotid, message.msgid);
        let streams = self.platform.streams();
        let poll = StreamOp::Poll {
            limit_secs: self.settings.stream_limit_secs,
        };
        let ttl = self.settings.replay.dedup_ttl_secs();
        match self.platform.dedup().claim(&key, now, ttl).await {
            Err(e) => return (BotOutcome::StoreFailed(e), None),
            Ok(Claim::Duplicate) => {
                let shown = match streams.apply(&stream, &poll, now).await {
                    Ok(Some(s)) => stream_reply_json(&stream, &s),
                    _ => stream_json(&stream, "", false),
                };
                let reply = self.seal(bot, &shown, nonce);
                return (BotOutcome::Duplicate { job: key }, reply);
            }
            Ok(Claim::Fresh) => {}
        }
        let open = StreamOp::Open {
            bot: bot.name.clone(),
            response_url: message.response_url.clone(),
        };
        if let Err(e) = streams.apply(&stream, &open, now).await {
            let _ = self.platform.dedup().release(&key).await;
            return (BotOutcome::StoreFailed(e), None);
        }
        let job = Job {
            id: key.clone(),
            app: bot.name.clone(),
            agent_id: AgentId(0),
            user: user.clone(),
            create_time: now,
            kind: JobKind::Stream {
                conversation: message.conversation(),
                input: message.input,
                stream: stream.clone(),
            },
        };
        if let Err(e) = self.platform.sink().submit(job).await {
            let _ = self.platform.dedup().release(&key).await;
            return (
                BotOutcome::NotQueued {
                    job: key,
                    error: e.0,
                },
                None,
            );
        }
        let reply = self.seal(bot, &stream_json(&stream, "", false), nonce);
        let outcome = BotOutcome::Accepted {
            bot: bot.name.clone(),
            job: key,
            user,
        };
        (outcome, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn stream_ids_are_stable_and_distinct() {
        assert_eq!(stream_id("b", "m1"), stream_id("b", "m1"));
        assert_ne!(stream_id("b", "m1"), stream_id("b", "m2"));
        assert_eq!(stream_id("b", "m1").len(), 24);
    }
}
