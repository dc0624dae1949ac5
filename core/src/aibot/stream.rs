//! A streamed answer's state, shared by the job that writes it and the refresh callbacks
//! that read it (possibly in other processes).
//!
//! The state changes only through [`StreamOp`]s applied by [`Stream::apply`], a pure function:
//! a store makes it atomic (a lock, a transaction, a compare-and-set, a Durable Object), so the
//! job and a refresh never overwrite each other. Content only grows: every answer WeCom gets
//! starts with the previous one.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// The most a stream answer's `content` may hold (UTF-8 bytes), and a `response_url` message.
pub const MAX_STREAM_BYTES: usize = 20_480;

/// Room kept at the end of a stream for [`CONTINUED_NOTE`].
const NOTE_ROOM: usize = 128;

/// Up to this size an answer in progress is shown whole; beyond it only up to a line break, so
/// that the cut, if one comes, falls at a paragraph.
const SHOW_WHOLE_BYTES: usize = 16 * 1024;

/// How long WeCom keeps asking for a stream: six minutes after the user's message.
pub const WECOM_STREAM_SECS: u64 = 360;

/// The default of `stream_limit_secs`: the stream is ended this long after the message, with
/// what has arrived, safely inside WeCom's six minutes.
pub const DEFAULT_STREAM_LIMIT_SECS: u64 = 330;

/// How long a stream's state is kept: the `response_url` is valid for an hour.
pub const STREAM_TTL_SECS: u64 = 3600;

/// Ends a stream whose answer goes on in a `response_url` message.
pub const CONTINUED_NOTE: &str = "\n\n（未完，见下一条消息）";

/// Ends the last message of an answer too long for WeCom.
pub const CUT_NOTE: &str = "\n\n（回答过长，以下内容已省略）";

/// Ends a stream that ran out of time before the answer was finished.
pub const LATE_NOTE: &str = "\n\n（回答较长，稍后以新消息发送）";

/// Answers a refresh for a stream the relay does not know (expired, or never opened here).
pub const UNKNOWN_STREAM_TEXT: &str = "（这条回答已失效，请重新提问）";

/// One stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// The bot's name.
    pub bot: String,
    /// The message's `response_url`, if it had one.
    #[serde(default)]
    pub response_url: Option<String>,
    /// When the message was accepted (unix seconds).
    pub started_at: u64,
    /// What the stream shows; only grows.
    #[serde(default)]
    pub content: String,
    /// The job has given its final content.
    #[serde(default)]
    pub finished: bool,
    /// WeCom was answered `finish: true`: the stream shows nothing more.
    #[serde(default)]
    pub closed: bool,
    /// It was closed by the time limit before the job finished.
    #[serde(default)]
    pub late: bool,
    /// Pictures for the last answer (`msg_item`), given before it finishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<StreamImage>,
}

/// A picture in a stream's last answer: JPG or PNG, as base64 with the MD5 of its bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamImage {
    /// The bytes, base64.
    pub base64: String,
    /// The MD5 of the bytes, lower-case hex.
    pub md5: String,
}

impl core::fmt::Debug for StreamImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamImage")
            .field("base64_len", &self.base64.len())
            .field("md5", &self.md5)
            .finish()
    }
}

impl StreamImage {
    /// The picture for `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        use md5::{Digest, Md5};
        Self {
            base64: crate::media::base64(bytes),
            md5: crate::crypto::to_hex(&Md5::digest(bytes)),
        }
    }
}

/// At most this many pictures in a stream's last answer (WeCom's limit).
pub const MAX_STREAM_IMAGES: usize = 10;
/// The largest picture a stream carries: WeCom documents 10 MB, but rejects the last answer
/// with pictures far smaller (peers report 1.5 MB failing), so the relay keeps to 512 KiB.
pub const MAX_STREAM_IMAGE_BYTES: usize = 512 << 10;
/// The most picture bytes one stream carries in all (a stream is stored whole, and a Durable
/// Object's value holds 2 MB).
pub const MAX_STREAM_IMAGES_TOTAL: usize = 1 << 20;

/// A change to a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StreamOp {
    /// A message was accepted: start its stream (a retry of the message keeps the one there).
    Open {
        /// The bot's name.
        bot: String,
        /// The message's `response_url`.
        response_url: Option<String>,
    },
    /// The answer so far: shown if it extends what is shown and the stream is open.
    Grow {
        /// The content to show.
        content: String,
    },
    /// The final content.
    Finish {
        /// The content to show.
        content: String,
    },
    /// A refresh: after it, the stream is closed if it was finished or its time is up.
    Poll {
        /// `stream_limit_secs`.
        limit_secs: u64,
    },
    /// Pictures for the last answer: kept if the stream is still open.
    Attach {
        /// The pictures.
        images: Vec<StreamImage>,
    },
    /// Only read it.
    Peek,
}

impl Stream {
    /// Applies `op` at `now` to the stream as stored (`None`: no such stream), returning the
    /// stream to store (`None`: nothing to store).
    pub fn apply(current: Option<Self>, op: &StreamOp, now: u64) -> Option<Self> {
        let mut stream = match (current, op) {
            (Some(s), _) => s,
            (None, StreamOp::Open { bot, response_url }) => {
                return Some(Self {
                    bot: bot.clone(),
                    response_url: response_url.clone(),
                    started_at: now,
                    content: String::new(),
                    finished: false,
                    closed: false,
                    late: false,
                    images: Vec::new(),
                })
            }
            (None, _) => return None,
        };
        match op {
            StreamOp::Open { .. } | StreamOp::Peek => {}
            StreamOp::Attach { images } => {
                if !stream.closed && !stream.finished {
                    stream.images = images.clone();
                }
            }
            StreamOp::Grow { content } | StreamOp::Finish { content } => {
                if !stream.closed
                    && content.len() <= MAX_STREAM_BYTES
                    && content.starts_with(stream.content.as_str())
                {
                    stream.content = content.clone();
                    if matches!(op, StreamOp::Finish { .. }) {
                        stream.finished = true;
                    }
                }
            }
            StreamOp::Poll { limit_secs } => {
                if stream.finished {
                    stream.closed = true;
                } else if !stream.closed && now >= stream.started_at.saturating_add(*limit_secs) {
                    stream.closed = true;
                    stream.late = true;
                    if stream.content.len() + LATE_NOTE.len() <= MAX_STREAM_BYTES {
                        stream.content.push_str(LATE_NOTE);
                    }
                }
            }
        }
        Some(stream)
    }

    /// Whether a refresh should be answered `finish: true`.
    pub fn finish(&self) -> bool {
        self.closed
    }

    /// The pictures the answer ends with: only on the last answer, and only if the job
    /// finished it (a stream closed by the time limit shows none).
    pub fn final_images(&self) -> &[StreamImage] {
        if self.closed && self.finished && !self.late {
            &self.images
        } else {
            &[]
        }
    }
}

/// The largest char boundary in `text` at or below `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// How much of `text` (an answer still growing, of which `shown` bytes are already shown) the
/// stream may show now: all of it while it is short; beyond that only up to a line break,
/// and never more than fits with a note after it. Never less than `shown`.
pub fn showable(text: &str, shown: usize) -> usize {
    if text.len() <= SHOW_WHOLE_BYTES {
        return text.len();
    }
    let limit = floor_boundary(text, MAX_STREAM_BYTES - NOTE_ROOM);
    let from = shown.min(limit);
    match text[from..limit].rfind('\n') {
        Some(i) => from + i + 1,
        // One line longer than a stream, with nothing shown yet: cut it hard.
        None if text.len() > limit && from == 0 => limit,
        None => from,
    }
}

/// A finished answer laid out for WeCom: what the stream shows at the end, and what goes on
/// through the `response_url` (cut with a note when even that is too long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The stream's final content.
    pub stream: String,
    /// The `response_url` message, if the answer does not fit the stream.
    pub rest: Option<String>,
}

/// Lays out a finished `answer` of which `shown` bytes are already shown.
pub fn layout(answer: &str, shown: usize) -> Layout {
    if answer.len() <= MAX_STREAM_BYTES {
        return Layout {
            stream: answer.to_owned(),
            rest: None,
        };
    }
    let cut = showable(answer, shown);
    let (head, tail) = answer.split_at(cut);
    Layout {
        stream: format!("{}{CONTINUED_NOTE}", head.trim_end()),
        rest: Some(fit_message(tail.trim_start())),
    }
}

/// `text` as one `response_url` message: whole if it fits, else cut at a line break with
/// [`CUT_NOTE`].
pub fn fit_message(text: &str) -> String {
    if text.len() <= MAX_STREAM_BYTES {
        return text.to_owned();
    }
    let limit = floor_boundary(text, MAX_STREAM_BYTES - CUT_NOTE.len());
    let cut = match text[..limit].rfind('\n') {
        Some(i) if i > limit / 2 => i,
        _ => limit,
    };
    format!("{}{CUT_NOTE}", text[..cut].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn open(now: u64) -> Stream {
        let op = StreamOp::Open {
            bot: "b".into(),
            response_url: None,
        };
        Stream::apply(None, &op, now).unwrap()
    }

    fn grow(s: Stream, content: &str) -> Stream {
        let op = StreamOp::Grow {
            content: content.into(),
        };
        Stream::apply(Some(s), &op, 0).unwrap()
    }

    #[test]
    fn content_only_grows_and_a_refresh_closes_a_finished_stream() {
        let s = grow(open(100), "Hel");
        let s = grow(s, "Hello");
        assert_eq!(
            grow(s.clone(), "Bye").content,
            "Hello",
            "not a continuation"
        );
        let poll = StreamOp::Poll { limit_secs: 330 };
        let s = Stream::apply(Some(s), &poll, 110).unwrap();
        assert!(!s.finish());
        let done = StreamOp::Finish {
            content: "Hello world".into(),
        };
        let s = Stream::apply(Some(s), &done, 120).unwrap();
        assert!(s.finished && !s.closed);
        let s = Stream::apply(Some(s), &poll, 121).unwrap();
        assert!(s.finish() && !s.late);
        assert_eq!(grow(s, "Hello world!").content, "Hello world", "closed");
        assert_eq!(Stream::apply(None, &poll, 0), None);
    }

    #[test]
    fn the_time_limit_closes_a_stream_with_what_arrived() {
        let s = grow(open(100), "partial");
        let poll = StreamOp::Poll { limit_secs: 330 };
        let s = Stream::apply(Some(s), &poll, 429).unwrap();
        assert!(!s.finish());
        let s = Stream::apply(Some(s), &poll, 430).unwrap();
        assert!(s.finish() && s.late);
        assert_eq!(s.content, format!("partial{LATE_NOTE}"));
        let done = StreamOp::Finish {
            content: "partial and more".into(),
        };
        let s = Stream::apply(Some(s), &done, 431).unwrap();
        assert!(!s.finished, "too late: the rest goes through response_url");
    }

    #[test]
    fn a_retried_message_keeps_its_stream() {
        let s = grow(open(100), "so far");
        let again = StreamOp::Open {
            bot: "b".into(),
            response_url: Some("x".into()),
        };
        assert_eq!(Stream::apply(Some(s.clone()), &again, 200), Some(s));
    }

    #[test]
    fn a_long_answer_is_shown_up_to_a_line_and_never_shrinks() {
        let para = "x".repeat(999) + "\n";
        let text: String = core::iter::repeat_n(para.as_str(), 30).collect();
        let mut shown = 0;
        for end in (0..=text.len()).step_by(777) {
            let now = showable(&text[..end], shown);
            assert!(now >= shown && now <= MAX_STREAM_BYTES - NOTE_ROOM);
            assert!(now <= SHOW_WHOLE_BYTES.max(end));
            if end > SHOW_WHOLE_BYTES && now > SHOW_WHOLE_BYTES {
                assert!(text[..now].ends_with('\n'), "{now}");
            }
            shown = now;
        }
        // One line longer than a stream: cut hard.
        let line = "字".repeat(10_000);
        let cut = showable(&line, 0);
        assert!(line.is_char_boundary(cut) && cut <= MAX_STREAM_BYTES - NOTE_ROOM);
    }

    #[test]
    fn a_finished_answer_is_laid_out_without_loss_or_silent_cuts() {
        let short = layout("short", 0);
        assert_eq!((short.stream.as_str(), short.rest), ("short", None));
        let paras: Vec<String> = (0..40)
            .map(|i| format!("{i:04} {}", "y".repeat(995)))
            .collect();
        let answer = paras.join("\n\n");
        let out = layout(&answer, 0);
        let head = out.stream.strip_suffix(CONTINUED_NOTE).unwrap();
        let rest = out.rest.unwrap();
        assert!(out.stream.len() <= MAX_STREAM_BYTES && rest.len() <= MAX_STREAM_BYTES);
        assert!(head.ends_with('y') && rest.starts_with(char::is_numeric));
        assert_eq!(format!("{head}\n\n{rest}"), answer, "nothing lost");
        let huge = "z\n".repeat(30_000);
        let out = layout(&huge, 0);
        let rest = out.rest.unwrap();
        assert!(rest.ends_with(CUT_NOTE) && rest.len() <= MAX_STREAM_BYTES);
    }
}
