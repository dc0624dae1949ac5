//! The AI bot's passive replies: the JSON WeCom reads, sealed with the bot's key and signed
//! with the callback's nonce.

use alloc::string::{String, ToString};

use serde_json::json;

use crate::crypto::{CryptoError, MsgCrypt};

/// A stream answer: the content so far, and whether it is the last.
pub fn stream_json(stream_id: &str, content: &str, finish: bool) -> String {
    json!({
        "msgtype": "stream",
        "stream": {"id": stream_id, "finish": finish, "content": content},
    })
    .to_string()
}

/// A stream's answer to a refresh: its content, `finish`, and on the last answer its
/// pictures as `msg_item`.
pub fn stream_reply_json(stream_id: &str, stream: &super::stream::Stream) -> String {
    let images = stream.final_images();
    if images.is_empty() {
        return stream_json(stream_id, &stream.content, stream.finish());
    }
    let items: alloc::vec::Vec<serde_json::Value> = images
        .iter()
        .map(|i| json!({"msgtype": "image", "image": {"base64": i.base64, "md5": i.md5}}))
        .collect();
    json!({
        "msgtype": "stream",
        "stream": {"id": stream_id, "finish": true, "content": stream.content, "msg_item": items},
    })
    .to_string()
}

/// A plain text answer (the `enter_chat` welcome).
pub fn text_json(content: &str) -> String {
    json!({"msgtype": "text", "text": {"content": content}}).to_string()
}

/// A `response_url` message: markdown.
pub fn markdown_json(content: &str) -> String {
    json!({"msgtype": "markdown", "markdown": {"content": content}}).to_string()
}

/// Seals `plain` for WeCom: `{"encrypt", "msgsignature", "timestamp", "nonce"}`, with the
/// callback's `nonce` and the given timestamp and randomness.
pub fn seal_reply(
    crypt: &MsgCrypt,
    plain: &str,
    random: &[u8; 16],
    timestamp: u64,
    nonce: &str,
) -> Result<String, CryptoError> {
    let sealed = crypt.encrypt(plain, random, &timestamp.to_string(), nonce)?;
    Ok(json!({
        "encrypt": sealed.encrypt,
        "msgsignature": sealed.signature,
        "timestamp": timestamp,
        "nonce": nonce,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_sealed_reply_opens_with_the_bot_key_and_verifies() {
        let crypt =
            MsgCrypt::new("tok", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "").unwrap();
        let plain = stream_json("s1", "hi", false);
        let sealed = seal_reply(&crypt, &plain, &[7; 16], 1_700_000_000, "n1").unwrap();
        let v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        assert_eq!(v["timestamp"], 1_700_000_000);
        assert_eq!(v["nonce"], "n1");
        let opened = crypt
            .decrypt(
                v["msgsignature"].as_str().unwrap(),
                "1700000000",
                "n1",
                v["encrypt"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(opened, plain);
        let inner: serde_json::Value = serde_json::from_str(&opened).unwrap();
        assert_eq!(inner["stream"]["finish"], false);
    }
}
