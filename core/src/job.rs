//! A job: the follow-up work of an accepted callback, its progress across attempts, and the
//! report of how it ended.
//!
//! A [`Job`] is plain data (serialisable, so a queue can carry it). [`JobState`] is what a
//! retry must know to continue without repeating a side effect. [`Step`] is what one attempt
//! decided, and [`JobReport`] is its last word: its `Display` is the log line every twin writes.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::AgentError;
use crate::ids::{AgentId, ScopedUser};
use crate::wecom::api::{ApiError, ErrorClass};
use crate::wecom::client::retry_delay_ms;

/// What the user sent, as the agent sees it. Media are references (media ids valid 3 days).
///
/// A [`Job`] is stored as JSON, and the native twin holds a waiting job as MessagePack whose
/// structs are arrays, read by position: a field skipped when empty (`skip_serializing_if`)
/// must be its variant's last. `native/src/jobs.rs` reads back a job of every shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentInput {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A picture.
    Image {
        /// Media id.
        media_id: String,
        /// Picture URL.
        pic_url: String,
    },
    /// A voice message.
    Voice {
        /// Media id.
        media_id: String,
        /// `amr` or `speex`.
        format: String,
        /// WeCom's transcript, when it made one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// A video.
    Video {
        /// Media id.
        media_id: String,
        /// Thumbnail media id.
        thumb_media_id: String,
    },
    /// A location.
    Location {
        /// Latitude.
        latitude: f64,
        /// Longitude.
        longitude: f64,
        /// Description.
        label: String,
    },
    /// A link.
    Link {
        /// Title.
        title: String,
        /// Description.
        description: String,
        /// URL.
        url: String,
    },
    /// A file (an app's `file` message).
    File {
        /// Media id.
        media_id: String,
        /// The file's name.
        file_name: String,
        /// Its size in bytes, when WeCom says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_size: Option<u64>,
    },
    /// An event with no meaning of its own to the relay (a webhook agent gets these), as parsed.
    Event {
        /// The event and its fields (an unknown one keeps its decrypted XML).
        event: crate::xml::Event,
    },
    /// An AI bot's message with media: the words, and the pictures, files or videos behind
    /// URLs whose bytes are sealed with the bot's key.
    Mixed {
        /// What the user wrote (the quote included).
        text: String,
        /// The media, in order.
        media: Vec<MediaLink>,
    },
}

/// A medium of an AI bot's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaLink {
    /// `image`, `file` or `video`.
    pub kind: String,
    /// Where its sealed bytes are (valid a few minutes).
    pub url: String,
}

impl AgentInput {
    /// The input as text, for agents that only read text (and for the echo agent).
    pub fn to_text(&self) -> String {
        match self {
            Self::Text { text } => text.clone(),
            Self::Image { media_id, .. } => format!("[image media_id={media_id}]"),
            Self::Voice {
                transcript: Some(text),
                ..
            } => text.clone(),
            Self::Voice {
                media_id, format, ..
            } => format!("[voice media_id={media_id} format={format}, no transcript]"),
            Self::Video { media_id, .. } => format!("[video media_id={media_id}]"),
            Self::Location {
                latitude,
                longitude,
                label,
            } => format!("[location {latitude},{longitude} {label}]"),
            Self::Link { title, url, .. } => format!("[link {title} {url}]"),
            Self::File {
                media_id,
                file_name,
                ..
            } => format!("[file {file_name} media_id={media_id}]"),
            Self::Event { event } => format!("[event {}]", event.name()),
            Self::Mixed { text, media } => {
                let mut lines: Vec<String> = Vec::with_capacity(media.len() + 1);
                if !text.is_empty() {
                    lines.push(text.clone());
                }
                lines.extend(media.iter().map(|m| format!("[{} {}]", m.kind, m.url)));
                lines.join("\n")
            }
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Ask the agent and send its answer.
    Answer {
        /// The user's input.
        input: AgentInput,
    },
    /// Send a fixed notice (the deny message).
    Notice {
        /// The text.
        text: String,
    },
    /// Pass a user's rating of an AI bot's answer to the webhook agent (`app` names the bot).
    Feedback {
        /// The `feedback.id` the answer carried.
        feedback_id: String,
        /// 1 accurate, 2 inaccurate, 3 cancelled.
        rating: u8,
        /// What the user wrote.
        comment: String,
    },
    /// Ask the agent and stream its answer to an AI bot's stream (`app` names the bot).
    Stream {
        /// The user's input.
        input: AgentInput,
        /// The stream's id.
        stream: String,
        /// The conversation's memory key: `aibotid:chatid` in a group, else `aibotid:userid`.
        conversation: String,
    },
}

/// Follow-up work of an accepted callback. Serialisable, so a durable queue can hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique per message: the dedup key.
    pub id: String,
    /// The app's name.
    pub app: String,
    /// The app's agent id (replies go through the same app).
    pub agent_id: AgentId,
    /// The user.
    pub user: ScopedUser,
    /// When WeCom created the message.
    pub create_time: u64,
    /// What to do.
    pub kind: JobKind,
}

/// Progress of one job, kept across retries (in memory, or in KV beside a queued job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// The texts to send, once known (the agent's answer, a command's answer, a notice).
    pub replies: Option<Vec<String>>,
    /// Parts WeCom accepted.
    pub parts_sent: usize,
    /// Parts in total, once known.
    pub parts_total: usize,
    /// Attempts made so far.
    pub attempts: u32,
    /// Whether the "thinking" notice went out.
    pub notice_sent: bool,
    /// Whether the job was a command the relay answered itself.
    pub command: bool,
    /// A streamed answer's part that goes through the `response_url`, once laid out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<String>,
    /// The answer's uploaded attachments, sent after its texts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<crate::wecom::api::Content>,
}

/// Why a job step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The job names an app that is not configured (any more).
    UnknownApp(String),
    /// The agent failed.
    Agent(AgentError),
    /// WeCom refused or could not be reached.
    Api(ApiError),
    /// The member's send budget is spent until this much later: not a failure, and not an
    /// attempt; the job goes on after the wait.
    Paced(Duration),
}

impl JobError {
    /// A metrics label: WeCom's errcode (`http_502` for a status without one), `transport`,
    /// `agent`, `config` or `paced`.
    pub fn label(&self) -> String {
        match self {
            Self::Api(api) => match (api.errcode, api.http_status) {
                (Some(code), _) => format!("{code}"),
                (None, Some(status)) if !(200..300).contains(&status) => format!("http_{status}"),
                _ => "transport".into(),
            },
            Self::Agent(_) => "agent".into(),
            Self::UnknownApp(_) => "config".into(),
            Self::Paced(_) => "paced".into(),
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::UnknownApp(_) => false,
            Self::Agent(e) => e.retryable,
            Self::Api(e) => e.class.is_retryable(),
            Self::Paced(_) => true,
        }
    }

    /// The delay before attempt `attempt + 1`, given this error.
    pub fn retry_delay_ms(&self, attempt: u32, jitter: u16) -> u64 {
        match self {
            Self::Api(e) => retry_delay_ms(attempt, e, jitter),
            Self::Agent(e) => {
                let as_api = ApiError {
                    class: ErrorClass::RetryLater,
                    errcode: None,
                    errmsg: String::new(),
                    http_status: None,
                    retry_after_secs: e.retry_after_secs,
                };
                retry_delay_ms(attempt, &as_api, jitter)
            }
            Self::UnknownApp(_) => 0,
            Self::Paced(wait) => u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownApp(name) => write!(f, "app {name:?} is not configured"),
            Self::Agent(e) => write!(f, "agent: {e}"),
            Self::Api(e) => write!(f, "wecom api: {e}"),
            Self::Paced(wait) => write!(
                f,
                "the member's send budget (30 a minute, 1000 an hour) is spent for {}s",
                wait.as_secs().max(1)
            ),
        }
    }
}

/// What one attempt at a job decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Every reply went out.
    Done(JobReport),
    /// It failed in a way another attempt may fix: run [`crate::Relay::step_job`] again after
    /// this delay, with the same [`JobState`].
    RetryIn(Duration),
    /// It failed for good (or ran out of attempts); the user got an apology if the agent
    /// never answered.
    GaveUp(JobReport),
}

/// How a job ended. Its `Display` is the log line; it never holds message text or a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// The job id.
    pub job: String,
    /// The app's name.
    pub app: String,
    /// Attempts made.
    pub attempts: u32,
    /// Parts WeCom accepted.
    pub parts_sent: usize,
    /// Parts in total, once known.
    pub parts_total: usize,
    /// Why it failed, if it did.
    pub error: Option<JobError>,
    /// Whether the user was told to try again.
    pub apologized: bool,
}

impl JobReport {
    /// Whether every reply went out.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }

    /// A metrics label for a failure: WeCom's errcode, `transport`, `agent` or `config`.
    pub fn failure_label(&self) -> Option<String> {
        self.error.as_ref().map(JobError::label)
    }
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            None => write!(
                f,
                "reply sent job={} parts={} attempts={}",
                self.job, self.parts_sent, self.attempts
            ),
            // What the operator must change, in plain words, once.
            Some(JobError::Api(api))
                if matches!(api.class, ErrorClass::IpNotTrusted | ErrorClass::Config) =>
            {
                write!(
                    f,
                    "{} (job={} app={}",
                    api.explanation(),
                    self.job,
                    self.app
                )?;
                if let Some(code) = api.errcode {
                    write!(f, " errcode={code}")?;
                }
                f.write_str(")")
            }
            Some(e) => write!(
                f,
                "reply failed job={} error={e} sent={} total={} attempts={}",
                self.job, self.parts_sent, self.parts_total, self.attempts
            ),
        }?;
        if self.apologized {
            f.write_str(" apology=sent")?;
        }
        Ok(())
    }
}
