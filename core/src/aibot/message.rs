//! The AI bot's decrypted JSON callbacks: a user's message, a stream refresh, or an event.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;

use crate::job::{AgentInput, MediaLink};

/// The longest id (msgid, aibotid, chatid, userid, stream id) accepted.
pub const MAX_ID_BYTES: usize = 128;

/// Single chat or group chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatType {
    /// One to one.
    Single,
    /// A group chat (the bot was @-mentioned).
    Group,
}

/// A user's message to a bot.
#[derive(Debug, Clone, PartialEq)]
pub struct BotMessage {
    /// WeCom's id of the message: the dedup key.
    pub msgid: String,
    /// The bot's id.
    pub aibotid: String,
    /// Single or group.
    pub chat_type: ChatType,
    /// The group's id (groups only).
    pub chat_id: Option<String>,
    /// The sender.
    pub user_id: String,
    /// Where a late or long answer may be POSTed, once, within an hour.
    pub response_url: Option<String>,
    /// What the user sent, for the agent.
    pub input: AgentInput,
}

impl BotMessage {
    /// The conversation this message belongs to: the group (`aibotid:chatid`) or the user
    /// (`aibotid:userid`, lower-cased as WeCom ids compare).
    pub fn conversation(&self) -> String {
        match (&self.chat_type, &self.chat_id) {
            (ChatType::Group, Some(chat)) => format!("{}:{chat}", self.aibotid),
            _ => format!("{}:{}", self.aibotid, self.user_id.to_lowercase()),
        }
    }
}

/// An event sent to a bot.
#[derive(Debug, Clone, PartialEq)]
pub enum BotEvent {
    /// A user opened the chat with the bot.
    EnterChat,
    /// A user rated an answer.
    Feedback {
        /// The `feedback.id` the answer carried.
        id: String,
        /// 1 accurate, 2 inaccurate, 3 cancelled.
        kind: u8,
        /// What the user wrote, if anything.
        content: String,
    },
    /// A template card's button was pressed.
    TemplateCard,
    /// Another event.
    Other(String),
}

/// What a decrypted bot callback says.
#[derive(Debug, Clone, PartialEq)]
pub enum BotCallback {
    /// A user's message.
    Message(BotMessage),
    /// WeCom asks for a stream's content so far.
    Refresh {
        /// The stream.
        stream_id: String,
        /// The bot.
        aibotid: String,
        /// Who is waiting for it.
        user_id: String,
    },
    /// An event.
    Event {
        /// The event.
        event: BotEvent,
        /// The bot.
        aibotid: String,
        /// The user it concerns.
        user_id: String,
    },
    /// A message type this relay does not know; answered with nothing.
    Unknown {
        /// Its `msgtype`.
        msgtype: String,
    },
}

/// Why a decrypted callback was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError(pub String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize, Default)]
struct From {
    #[serde(default)]
    userid: String,
}

#[derive(Deserialize, Default)]
struct Text {
    #[serde(default)]
    content: String,
}

#[derive(Deserialize, Default)]
struct Url {
    #[serde(default)]
    url: String,
}

#[derive(Deserialize, Default)]
struct Item {
    #[serde(default)]
    msgtype: String,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    image: Option<Url>,
}

#[derive(Deserialize, Default)]
struct Mixed {
    #[serde(default)]
    msg_item: Vec<Item>,
}

#[derive(Deserialize, Default)]
struct StreamRef {
    #[serde(default)]
    id: String,
}

/// What a message (or the message it quotes) carries: its type and the body of that type.
#[derive(Deserialize, Default)]
struct Content {
    #[serde(default)]
    msgtype: String,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    mixed: Option<Mixed>,
    #[serde(default)]
    voice: Option<Text>,
    #[serde(default)]
    image: Option<Url>,
    #[serde(default)]
    file: Option<Url>,
    #[serde(default)]
    video: Option<Url>,
}

#[derive(Deserialize, Default)]
struct Feedback {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "type")]
    kind: u8,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize, Default)]
struct EventBody {
    #[serde(default)]
    eventtype: String,
    #[serde(default)]
    feedback_event: Option<Feedback>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    msgid: String,
    #[serde(default)]
    aibotid: String,
    #[serde(default)]
    chatid: Option<String>,
    #[serde(default)]
    chattype: Option<String>,
    #[serde(default)]
    from: From,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(flatten)]
    content: Content,
    #[serde(default)]
    quote: Option<Content>,
    #[serde(default)]
    stream: Option<StreamRef>,
    #[serde(default)]
    event: Option<EventBody>,
}

fn id(field: &str, value: &str) -> Result<String, MessageError> {
    if value.is_empty() || value.len() > MAX_ID_BYTES || crate::text::has_control(value) {
        return Err(MessageError(format!(
            "{field} must be 1 to {MAX_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(value.to_owned())
}

/// Drops the leading `@name` a group message starts with when the bot was mentioned.
fn without_mention(text: &str) -> &str {
    let trimmed = text.trim_start();
    match trimmed.strip_prefix('@') {
        Some(rest) => match rest.find(char::is_whitespace) {
            Some(end) => rest[end..].trim_start(),
            None => trimmed,
        },
        None => text,
    }
}

/// The content's words and media; `None` for a type this relay does not know. A medium
/// without a URL is left out.
fn content_parts(c: &Content) -> Option<(String, Vec<MediaLink>)> {
    let text_of = |t: &Option<Text>| t.as_ref().map(|t| t.content.clone()).unwrap_or_default();
    let link = |kind: &str, u: &Option<Url>| {
        u.as_ref().filter(|u| !u.url.is_empty()).map(|u| MediaLink {
            kind: kind.to_owned(),
            url: u.url.clone(),
        })
    };
    Some(match c.msgtype.as_str() {
        "text" => (text_of(&c.text), Vec::new()),
        "voice" => (text_of(&c.voice), Vec::new()),
        "image" | "file" | "video" => {
            let url = match c.msgtype.as_str() {
                "image" => &c.image,
                "file" => &c.file,
                _ => &c.video,
            };
            (String::new(), link(&c.msgtype, url).into_iter().collect())
        }
        "mixed" => {
            let mut words = Vec::new();
            let mut media = Vec::new();
            for item in c.mixed.iter().flat_map(|m| &m.msg_item) {
                match item.msgtype.as_str() {
                    "text" => words.extend(item.text.as_ref().map(|t| t.content.clone())),
                    "image" => media.extend(link("image", &item.image)),
                    other => words.push(format!("[{other}]")),
                }
            }
            (words.join("\n"), media)
        }
        _ => return None,
    })
}

/// The content as the agent reads it in text alone (a quote).
fn content_text(c: &Content) -> Option<String> {
    let (text, media) = content_parts(c)?;
    Some(AgentInput::Mixed { text, media }.to_text())
}

/// Parses a decrypted bot callback.
pub fn parse_callback(json: &str) -> Result<BotCallback, MessageError> {
    let raw: Raw = serde_json::from_str(json).map_err(|e| {
        // serde_json's message names the position, never a value worth hiding, but keep it
        // short.
        let mut msg = format!("not a bot callback: {e}");
        msg.truncate(160);
        MessageError(msg)
    })?;
    let aibotid = id("aibotid", &raw.aibotid)?;
    let user_id = id("from.userid", &raw.from.userid)?;
    match raw.content.msgtype.as_str() {
        "" => return Err(MessageError("msgtype is missing".into())),
        "stream" => {
            let stream = raw.stream.unwrap_or_default();
            return Ok(BotCallback::Refresh {
                stream_id: id("stream.id", &stream.id)?,
                aibotid,
                user_id,
            });
        }
        "event" => {
            let body = raw.event.unwrap_or_default();
            let event = match body.eventtype.as_str() {
                "enter_chat" => BotEvent::EnterChat,
                "feedback_event" => {
                    let f = body.feedback_event.unwrap_or_default();
                    BotEvent::Feedback {
                        id: f.id.chars().take(256).collect(),
                        kind: f.kind,
                        content: f.content,
                    }
                }
                "template_card_event" => BotEvent::TemplateCard,
                other => BotEvent::Other(other.chars().take(64).collect()),
            };
            return Ok(BotCallback::Event {
                event,
                aibotid,
                user_id,
            });
        }
        _ => {}
    }
    let Some((words, media)) = content_parts(&raw.content) else {
        return Ok(BotCallback::Unknown {
            msgtype: raw.content.msgtype.chars().take(64).collect(),
        });
    };
    let chat_type = match raw.chattype.as_deref() {
        Some("group") => ChatType::Group,
        _ => ChatType::Single,
    };
    let chat_id = match (chat_type, raw.chatid.as_deref()) {
        (ChatType::Group, Some(chat)) => Some(id("chatid", chat)?),
        (ChatType::Group, None) => {
            return Err(MessageError("a group message without chatid".into()))
        }
        (ChatType::Single, _) => None,
    };
    let mut text = if chat_type == ChatType::Group {
        without_mention(&words).to_owned()
    } else {
        words
    };
    if let Some(quote) = &raw.quote {
        let quoted = content_text(quote).unwrap_or_else(|| format!("[{}]", quote.msgtype));
        let quoted: Vec<String> = quoted.lines().map(|l| format!("> {l}")).collect();
        text = if text.is_empty() {
            quoted.join("\n")
        } else {
            format!("{}\n\n{text}", quoted.join("\n"))
        };
    }
    let input = if media.is_empty() {
        AgentInput::Text { text }
    } else {
        AgentInput::Mixed { text, media }
    };
    Ok(BotCallback::Message(BotMessage {
        msgid: id("msgid", &raw.msgid)?,
        aibotid,
        chat_type,
        chat_id,
        user_id,
        response_url: raw.response_url.filter(|u| !u.is_empty()),
        input,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn message(json: &str) -> BotMessage {
        match parse_callback(json).unwrap() {
            BotCallback::Message(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn text(m: &BotMessage) -> String {
        m.input.to_text()
    }

    #[test]
    fn a_single_chat_text_message() {
        let m = message(
            r#"{"msgid":"m1","aibotid":"bot","chattype":"single","from":{"userid":"Alice"},
                "response_url":"https://qyapi.weixin.qq.com/r?c=1","msgtype":"text","text":{"content":"hi"}}"#,
        );
        assert_eq!(m.chat_type, ChatType::Single);
        assert_eq!(m.conversation(), "bot:alice");
        assert_eq!(text(&m), "hi");
        assert_eq!(
            m.response_url.as_deref(),
            Some("https://qyapi.weixin.qq.com/r?c=1")
        );
    }

    #[test]
    fn a_group_mention_loses_the_mention_and_keeps_the_chat() {
        let m = message(
            r#"{"msgid":"m2","aibotid":"bot","chatid":"g1","chattype":"group","from":{"userid":"bob"},
                "msgtype":"text","text":{"content":"@Helper what is 2+2?"},
                "quote":{"msgtype":"text","text":{"content":"earlier\nlines"}}}"#,
        );
        assert_eq!(m.conversation(), "bot:g1");
        assert_eq!(text(&m), "> earlier\n> lines\n\nwhat is 2+2?");
        assert!(parse_callback(
            r#"{"msgid":"m","aibotid":"b","chattype":"group","from":{"userid":"u"},"msgtype":"text","text":{"content":"x"}}"#
        )
        .is_err());
    }

    #[test]
    fn mixed_voice_and_media_become_text() {
        let m = message(
            r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"mixed","mixed":{"msg_item":[
                {"msgtype":"text","text":{"content":"look"}},{"msgtype":"image","image":{"url":"https://x/1"}}]}}"#,
        );
        assert_eq!(text(&m), "look\n[image https://x/1]");
        assert!(
            matches!(&m.input, AgentInput::Mixed { text, media } if text == "look" && media[0].kind == "image")
        );
        let v = message(
            r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"voice","voice":{"content":"spoken"}}"#,
        );
        assert_eq!(text(&v), "spoken");
        let f = message(
            r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"file","file":{"url":"https://x/f"}}"#,
        );
        assert_eq!(text(&f), "[file https://x/f]");
    }

    #[test]
    fn refreshes_events_and_unknowns() {
        assert_eq!(
            parse_callback(
                r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"stream","stream":{"id":"s1"}}"#
            )
            .unwrap(),
            BotCallback::Refresh {
                stream_id: "s1".into(),
                aibotid: "b".into(),
                user_id: "u".into()
            }
        );
        let feedback = parse_callback(
            r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"event",
                "event":{"eventtype":"feedback_event","feedback_event":{"id":"f1","type":2,"content":"wrong"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            feedback,
            BotCallback::Event {
                event: BotEvent::Feedback { kind: 2, .. },
                ..
            }
        ));
        assert!(matches!(
            parse_callback(r#"{"aibotid":"b","from":{"userid":"u"},"msgtype":"event","event":{"eventtype":"enter_chat"}}"#).unwrap(),
            BotCallback::Event { event: BotEvent::EnterChat, .. }
        ));
        assert_eq!(
            parse_callback(
                r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"hologram"}"#
            )
            .unwrap(),
            BotCallback::Unknown {
                msgtype: "hologram".into()
            }
        );
    }

    #[test]
    fn bad_callbacks_are_refused() {
        for bad in [
            "not json",
            r#"{"msgtype":"text"}"#,
            r#"{"msgid":"","aibotid":"b","from":{"userid":"u"},"msgtype":"text","text":{"content":"x"}}"#,
            r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"msgtype":"stream","stream":{}}"#,
            r#"{"msgid":"m","aibotid":"b","from":{"userid":"u"},"text":{"content":"x"}}"#,
        ] {
            assert!(parse_callback(bad).is_err(), "{bad}");
        }
        let long = "u".repeat(MAX_ID_BYTES + 1);
        let json = format!(
            r#"{{"msgid":"m","aibotid":"b","from":{{"userid":"{long}"}},"msgtype":"text","text":{{"content":"x"}}}}"#
        );
        assert!(parse_callback(&json).is_err());
    }
}
