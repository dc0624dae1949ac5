//! The fuzz targets' bodies, one function per target: each takes the fuzzer's bytes and panics
//! only when an invariant breaks. `fuzz/` (cargo-fuzz) calls them, and
//! `core/tests/fuzz_regressions.rs` replays every input the fuzzers kept, on stable, in CI.

use alloc::string::String;
use alloc::vec::Vec;

use crate::apps::SignedQuery;
use crate::config::{RawAgentSettings, RawSettings};
use crate::crypto::{open, seal, signature, EncodingAesKey, MsgCrypt};
use crate::http::HttpResponse;
use crate::wecom::api::MAX_TEXT_BYTES;
use crate::wecom::split::{split, split_for_wecom};
use crate::xml::{parse_envelope, parse_message};

/// A target's body: the fuzzer's bytes in, a panic out when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets, by name, for the regression runner.
pub const TARGETS: &[(&str, Target)] = &[
    ("query", query),
    ("xml", xml),
    ("decrypt", decrypt),
    ("settings_env", settings_env),
    ("webhook_answer", webhook_answer),
    ("openai_answer", openai_answer),
    ("split", split_reply),
    ("bot_callback", bot_callback),
    ("event_stream", event_stream),
    ("stream_layout", stream_layout),
    ("answer_media", answer_media),
];

const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";

/// The callback query parser: whatever it accepts is of WeCom's form.
pub fn query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(q) = SignedQuery::parse(&text) {
        assert_eq!(q.msg_signature.len(), 40);
        assert!(q
            .msg_signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert!((1..=10).contains(&q.timestamp.len()));
        assert!(q.timestamp.bytes().all(|b| b.is_ascii_digit()));
        assert!((1..=64).contains(&q.nonce.len()));
    }
}

/// The envelope and message XML parsers: never a panic, what parses is bounded, and the
/// fast path for WeCom's flat documents reads what quick-xml reads.
pub fn xml(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    assert!(crate::xml::fast_path_agrees(text));
    if let Ok(envelope) = parse_envelope(text) {
        assert!(!envelope.encrypt.is_empty());
    }
    if let Ok(message) = parse_message(text) {
        assert!(!message.from_user_name.is_empty());
        assert!(message.from_user_name.len() <= crate::xml::MAX_USER_ID_BYTES);
    }
}

/// Decryption with a fixed key over arbitrary ciphertext (signed, so the AES path runs), and
/// the round trip of arbitrary plaintext.
pub fn decrypt(data: &[u8]) {
    let key = EncodingAesKey::parse(KEY).expect("the sample key");
    let text = String::from_utf8_lossy(data);
    let _ = open(&key, &text);
    let crypt = MsgCrypt::new(TOKEN, KEY, CORP).expect("the sample app");
    let sig = signature(TOKEN, "1", "n", &text);
    let _ = crypt.decrypt(&sig, "1", "n", &text);
    let sealed = seal(&key, data, CORP.as_bytes(), &[7; 16]).expect("sealing never fails");
    let opened = open(&key, &sealed).expect("what was sealed opens");
    assert_eq!(opened.msg(), data);
    assert_eq!(opened.receive_id(), CORP.as_bytes());
}

/// The settings from the environment (`KEY=value` lines): never a panic, and no secret value
/// in an error or in the settings' `Debug`.
pub fn settings_env(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.into()))
        .collect();
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let secrets: Vec<&str> = vars
        .iter()
        .filter(|(k, v)| {
            (k.ends_with("SECRET") || k.ends_with("TOKEN") || k.ends_with("KEY"))
                && looks_secret(v.trim())
        })
        .map(|(_, v)| v.trim())
        // A value that is also another variable's may be shown for that one.
        .filter(|s| text.matches(*s).count() == 1)
        .collect();
    let leaks = |shown: &str| secrets.iter().any(|s| shown.contains(s));
    let mut raw = RawSettings::default();
    match raw.apply_env(lookup).and_then(|()| raw.resolve()) {
        Ok(settings) => assert!(!leaks(&alloc::format!("{settings:?}")), "Debug leaks"),
        Err(e) => assert!(!leaks(&alloc::format!("{e}")), "an error leaks: {e}"),
    }
    let mut agent = RawAgentSettings::default();
    agent.apply_env(lookup);
    match agent.resolve() {
        Ok(settings) => assert!(!leaks(&alloc::format!("{settings:?}")), "Debug leaks"),
        Err(e) => assert!(!leaks(&alloc::format!("{e}")), "an error leaks: {e}"),
    }
}

/// A value worth looking for in output: 8 or more characters of a token's alphabet, letters
/// and digits both (so that no word of an error message matches by chance).
pub fn looks_secret(value: &str) -> bool {
    value.len() >= 8
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b))
        && value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().any(|b| b.is_ascii_alphabetic())
}

fn response(data: &[u8]) -> HttpResponse {
    let (status, body) = match data.split_first() {
        Some((&s, rest)) => (if s < 128 { 200 } else { 100 + u16::from(s) * 2 }, rest),
        None => (200, data),
    };
    HttpResponse {
        status,
        body: body.to_vec(),
        ..HttpResponse::default()
    }
}

/// The webhook agent's answer parser (first byte picks the status).
pub fn webhook_answer(data: &[u8]) {
    let _ = crate::agent::webhook::parse_webhook(&response(data));
}

/// The OpenAI-compatible answer parser (first byte picks the status).
pub fn openai_answer(data: &[u8]) {
    let _ = crate::agent::openai::parse_chat(&response(data));
}

/// Reply splitting: every part within the limit, the bodies joined give the text back, and
/// WeCom's split gives parts within 2,048 bytes.
pub fn split_reply(data: &[u8]) {
    let (max, text) = match data.split_first() {
        Some((&m, rest)) => (32 + usize::from(m) * 8, String::from_utf8_lossy(rest)),
        None => return,
    };
    let parts = split(&text, max);
    let joined: String = parts.iter().map(|p| p.body).collect();
    assert_eq!(joined, text);
    for p in &parts {
        assert!(p.render().len() <= max, "a part over {max} bytes");
        assert!(!p.body.is_empty());
    }
    for part in split_for_wecom(&text) {
        assert!(part.len() <= MAX_TEXT_BYTES);
    }
}

/// The AI bot's JSON callbacks: never a panic, and the ids of what parses are bounded.
pub fn bot_callback(data: &[u8]) {
    use crate::aibot::{parse_callback, BotCallback, MAX_ID_BYTES};
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    match parse_callback(text) {
        Ok(BotCallback::Message(m)) => {
            for id in [&m.msgid, &m.aibotid, &m.user_id] {
                assert!(!id.is_empty() && id.len() <= MAX_ID_BYTES);
            }
            let _ = m.conversation();
        }
        Ok(BotCallback::Refresh { stream_id, .. }) => {
            assert!(!stream_id.is_empty() && stream_id.len() <= MAX_ID_BYTES);
        }
        Ok(_) | Err(_) => {}
    }
}

/// A streamed Chat Completions answer: however the body is cut into pieces (the first byte
/// picks the piece size), the text read is the same as from the body whole.
pub fn event_stream(data: &[u8]) {
    use crate::agent::openai::SseReader;
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let read = |size: usize| {
        let mut reader = SseReader::default();
        let mut text = String::new();
        for piece in body.chunks(size.max(1)) {
            reader.feed(piece, &mut |t| text.push_str(t));
        }
        (text, reader.done, reader.error)
    };
    assert_eq!(read(usize::from(size)), read(body.len().max(1)));
}

/// Where a streamed answer is cut: what the stream shows only grows, stays within the limit,
/// and the finished layout loses nothing that fits in the stream and one more message.
pub fn stream_layout(data: &[u8]) {
    use crate::aibot::stream::{layout, showable, CONTINUED_NOTE, MAX_STREAM_BYTES};
    // Small inputs are stretched so the interesting sizes (16 to 40 KB) are reached.
    let text = String::from_utf8_lossy(data).repeat(1 + 40_000 / data.len().max(1));
    let mut shown = 0;
    let mut end = 0;
    while end < text.len() {
        end = (end + 997).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let now = showable(&text[..end], shown);
        assert!(now >= shown && now <= end && now <= MAX_STREAM_BYTES);
        assert!(text.is_char_boundary(now));
        shown = now;
    }
    let out = layout(&text, shown);
    assert!(out.stream.len() <= MAX_STREAM_BYTES);
    if let Some(rest) = &out.rest {
        assert!(rest.len() <= MAX_STREAM_BYTES);
        let head = out
            .stream
            .strip_suffix(CONTINUED_NOTE)
            .expect("says it continues");
        assert!(text.starts_with(head));
    } else {
        assert_eq!(out.stream, text);
    }
}

/// An answer's attachments and formatting, and the media policy over every URL in it: never a
/// panic; nothing taken from an answer without attachments; names are bare file names; only
/// public `https` (or allowed) URLs pass; an upload plan fits WeCom's kinds.
pub fn answer_media(data: &[u8]) {
    use crate::media::{drop_inline_bytes, extract_attachments, plan_upload, MediaPolicy, Source};
    use crate::wecom::api::MediaType;
    use crate::wecom::markdown::{strip_markdown, uses_markdown};
    let text = String::from_utf8_lossy(data);
    let (clean, found) = extract_attachments(&text);
    if found.is_empty() {
        assert_eq!(clean, text);
    }
    assert!(drop_inline_bytes(&text).len() <= text.len());
    let _ = uses_markdown(&text);
    let _ = strip_markdown(&text);
    let policy = MediaPolicy::from_hosts(&["files.internal", "10.0.0.0/8"]).unwrap();
    for a in &found {
        assert!(a.name.chars().count() <= 128);
        assert!(!a.name.contains(['/', '\\']));
        match &a.source {
            Source::Url(url) => {
                assert!(!url.is_empty() && !url.contains(char::is_whitespace));
                if let Ok(checked) = policy.check(url) {
                    let host = checked.host_str().unwrap_or_default();
                    let allowed = host.eq_ignore_ascii_case("files.internal")
                        || host
                            .parse::<core::net::Ipv4Addr>()
                            .is_ok_and(|ip| ip.octets()[0] == 10);
                    assert!(checked.scheme() == "https" || allowed, "{url}");
                    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<core::net::IpAddr>() {
                        assert!(crate::media::is_public(ip) || allowed, "{url}");
                    }
                }
            }
            Source::Bytes { bytes, mime } => {
                if let Ok(plan) = plan_upload(&a.name, mime.as_deref(), a.kind, bytes) {
                    assert!(!plan.file_name.is_empty() && bytes.len() > 5);
                    assert!(bytes.len() <= plan.kind.max_bytes());
                    if plan.kind == MediaType::Image {
                        let ext = crate::media::extension(&plan.file_name);
                        assert!(matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")));
                    }
                }
            }
        }
    }
}
