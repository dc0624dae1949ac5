//! `wecom-relay crypto`: the official SDK's operations on the command line, for debugging
//! captured requests. Each prints its result on stdout; a failure says which check failed, in
//! the SDK's terms (with its error code), and never prints the key.

use std::io::Read;

use clap::Subcommand;
use wecom_relay_core::apps::SignedQuery;
use wecom_relay_core::crypto::{
    open, signature, verify_signature, CryptoError, EncodingAesKey, MsgCrypt,
};

/// One crypto operation.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CryptoCommand {
    /// The `msg_signature` of an encrypted text: SHA1 over token, timestamp, nonce and it.
    Sign {
        /// The app's or bot's Token.
        #[arg(long)]
        token: String,
        /// `timestamp`.
        #[arg(long)]
        timestamp: String,
        /// `nonce`.
        #[arg(long)]
        nonce: String,
        /// The encrypted text (`Encrypt`, or `echostr`).
        encrypt: String,
    },
    /// Encrypts a plaintext as WeCom does (`-` reads standard input), and signs it when a
    /// token is given.
    Encrypt {
        /// The EncodingAESKey (43 characters).
        #[arg(long)]
        aes_key: String,
        /// The receive id: the CorpID for an app, empty for an AI bot.
        #[arg(long, default_value = "")]
        receive_id: String,
        /// The Token, to print a signature too.
        #[arg(long)]
        token: Option<String>,
        /// `timestamp` for the signature (default: now).
        #[arg(long)]
        timestamp: Option<String>,
        /// `nonce` for the signature.
        #[arg(long, default_value = "wecomrelay")]
        nonce: String,
        /// The plaintext, or `-`.
        plaintext: String,
    },
    /// Decrypts an `Encrypt` text or a whole callback body (`-` reads standard input); with
    /// `--token`, `--signature`, `--timestamp` and `--nonce` (or `--query`) it checks the
    /// signature first, as the relay does.
    Decrypt {
        /// The EncodingAESKey.
        #[arg(long)]
        aes_key: String,
        /// The receive id to expect (the CorpID; empty for an AI bot). Unset: print it.
        #[arg(long)]
        receive_id: Option<String>,
        /// The Token.
        #[arg(long)]
        token: Option<String>,
        /// The request's query string (`msg_signature=...&timestamp=...&nonce=...`).
        #[arg(long)]
        query: Option<String>,
        /// `msg_signature`.
        #[arg(long)]
        signature: Option<String>,
        /// `timestamp`.
        #[arg(long)]
        timestamp: Option<String>,
        /// `nonce`.
        #[arg(long)]
        nonce: Option<String>,
        /// The `Encrypt` text, an XML body with `<Encrypt>`, a JSON body with `"encrypt"`, or `-`.
        input: String,
    },
    /// Answers a captured URL verification: checks the signature and prints the echo the
    /// server must answer with, exactly.
    VerifyUrl {
        /// The Token.
        #[arg(long)]
        token: String,
        /// The EncodingAESKey.
        #[arg(long)]
        aes_key: String,
        /// The CorpID (empty for an AI bot).
        #[arg(long, default_value = "")]
        receive_id: String,
        /// The whole URL WeCom called, or its query string.
        url: String,
    },
}

/// `what`, then the SDK's name and code for the error (its `Display`).
fn crypto_error(what: &str, e: CryptoError) -> String {
    format!("{what}: {e}")
}

fn read_arg(value: &str) -> Result<String, String> {
    if value != "-" {
        return Ok(value.to_owned());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The encrypted text in a body: `<Encrypt>` of XML, `"encrypt"` of JSON, or the text itself.
fn encrypted_in(input: &str) -> Result<String, String> {
    let input = input.trim();
    if input.starts_with('<') {
        return wecom_relay_core::xml::parse_envelope(input)
            .map(|e| e.encrypt.into_owned())
            .map_err(|e| format!("not a callback body: {e}"));
    }
    if input.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(input).map_err(|e| format!("not a JSON body: {e}"))?;
        return v["encrypt"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the JSON body has no \"encrypt\"".to_owned());
    }
    Ok(input.to_owned())
}

/// The query part of a URL (or the string itself when it is a query).
fn query_of(url: &str) -> &str {
    url.split_once('?').map_or(url, |(_, q)| q)
}

/// Runs a command: its output, or why it failed.
pub fn run(cmd: &CryptoCommand, now_unix: u64) -> Result<String, String> {
    match cmd {
        CryptoCommand::Sign {
            token,
            timestamp,
            nonce,
            encrypt,
        } => Ok(signature(token, timestamp, nonce, &read_arg(encrypt)?)),
        CryptoCommand::Encrypt {
            aes_key,
            receive_id,
            token,
            timestamp,
            nonce,
            plaintext,
        } => {
            let plaintext = read_arg(plaintext)?;
            let crypt = MsgCrypt::new(token.as_deref().unwrap_or(""), aes_key, receive_id)
                .map_err(|e| crypto_error("the EncodingAESKey", e))?;
            let mut random = [0u8; 16];
            getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
            let timestamp = timestamp.clone().unwrap_or_else(|| now_unix.to_string());
            let sealed = crypt
                .encrypt(&plaintext, &random, &timestamp, nonce)
                .map_err(|e| crypto_error("encrypting", e))?;
            Ok(match token {
                Some(_) => format!(
                    "encrypt: {}\nmsg_signature: {}\ntimestamp: {}\nnonce: {}",
                    sealed.encrypt, sealed.signature, sealed.timestamp, sealed.nonce
                ),
                None => sealed.encrypt,
            })
        }
        CryptoCommand::Decrypt {
            aes_key,
            receive_id,
            token,
            query,
            signature: sig,
            timestamp,
            nonce,
            input,
        } => {
            let encrypted = encrypted_in(&read_arg(input)?)?;
            let key = EncodingAesKey::parse(aes_key)
                .map_err(|e| crypto_error("the EncodingAESKey", e))?;
            let signed = match query {
                Some(q) => {
                    let q = SignedQuery::parse(query_of(q)).map_err(|e| format!("--query: {e}"))?;
                    Some((
                        q.msg_signature.into_owned(),
                        q.timestamp.into_owned(),
                        q.nonce.into_owned(),
                    ))
                }
                None => match (sig, timestamp, nonce) {
                    (Some(s), Some(t), Some(n)) => Some((s.clone(), t.clone(), n.clone())),
                    (None, None, None) => None,
                    _ => return Err("give --signature, --timestamp and --nonce together".into()),
                },
            };
            let mut out = Vec::new();
            if let Some((sig, ts, nonce)) = signed {
                let token = token
                    .as_deref()
                    .ok_or("checking a signature needs --token")?;
                verify_signature(token, &ts, &nonce, &encrypted, &sig).map_err(|e| {
                    crypto_error(
                        "the signature does not match (wrong Token, or the text was changed)",
                        e,
                    )
                })?;
                out.push("signature: ok".to_owned());
            }
            let opened = open(&key, &encrypted).map_err(|e| {
                crypto_error(
                    "it does not decrypt (wrong EncodingAESKey, or not WeCom's text)",
                    e,
                )
            })?;
            let got = String::from_utf8_lossy(opened.receive_id()).into_owned();
            match receive_id {
                Some(want) if *want != got => {
                    return Err(crypto_error(
                        &format!("the receive id is {got:?}, not {want:?}"),
                        CryptoError::ValidateCorpId,
                    ))
                }
                _ => out.push(format!("receive_id: {got}")),
            }
            out.push(String::from_utf8_lossy(opened.msg()).into_owned());
            Ok(out.join("\n"))
        }
        CryptoCommand::VerifyUrl {
            token,
            aes_key,
            receive_id,
            url,
        } => {
            let q =
                SignedQuery::parse(query_of(url.trim())).map_err(|e| format!("the URL: {e}"))?;
            let echostr = q
                .echostr
                .ok_or("the URL has no echostr: it is not a URL verification")?;
            let crypt = MsgCrypt::new(token, aes_key, receive_id)
                .map_err(|e| crypto_error("the EncodingAESKey", e))?;
            crypt
                .verify_url(&q.msg_signature, &q.timestamp, &q.nonce, &echostr)
                .map_err(|e| match e {
                    CryptoError::ValidateSignature => crypto_error(
                        "the signature does not match: the Token differs from the console's",
                        e,
                    ),
                    CryptoError::ValidateCorpId => crypto_error(
                        "the echo is for another receive id: check the CorpID (empty for an AI bot)",
                        e,
                    ),
                    other => crypto_error(
                        "the echo does not decrypt: the EncodingAESKey differs from the console's",
                        other,
                    ),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wecom_relay_core::testing::vectors;

    #[test]
    fn the_official_vectors_on_the_command_line() {
        let set = vectors().remove(0);
        let url = format!(
            "https://example.com/wecom/callback?{}",
            set.verify_url.query
        );
        let echo = run(
            &CryptoCommand::VerifyUrl {
                token: set.token.clone(),
                aes_key: set.encoding_aes_key.clone(),
                receive_id: set.corp_id.clone(),
                url: url.clone(),
            },
            0,
        )
        .unwrap();
        assert_eq!(echo, set.verify_url.expected_body);
        let wrong = run(
            &CryptoCommand::VerifyUrl {
                token: "not-the-token".into(),
                aes_key: set.encoding_aes_key.clone(),
                receive_id: set.corp_id.clone(),
                url,
            },
            0,
        )
        .unwrap_err();
        assert!(
            wrong.contains("Token") && wrong.contains("-40001"),
            "{wrong}"
        );
        let plain = run(
            &CryptoCommand::Decrypt {
                aes_key: set.encoding_aes_key.clone(),
                receive_id: Some(set.corp_id.clone()),
                token: Some(set.token.clone()),
                query: Some(set.callback.query.clone()),
                signature: None,
                timestamp: None,
                nonce: None,
                input: set.callback.body.clone(),
            },
            0,
        )
        .unwrap();
        assert!(plain.starts_with("signature: ok\nreceive_id: "), "{plain}");
        assert!(plain.contains("<xml>"), "{plain}");
        assert!(!plain.contains(&set.encoding_aes_key));
    }

    #[test]
    fn encrypt_then_decrypt_and_sign() {
        let key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
        let out = run(
            &CryptoCommand::Encrypt {
                aes_key: key.into(),
                receive_id: "wwcorp".into(),
                token: Some("tok".into()),
                timestamp: None,
                nonce: "n1".into(),
                plaintext: "<xml>hi</xml>".into(),
            },
            1_700_000_000,
        )
        .unwrap();
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap()
                .to_owned()
        };
        let encrypt = field("encrypt");
        assert_eq!(field("timestamp"), "1700000000");
        let sig = run(
            &CryptoCommand::Sign {
                token: "tok".into(),
                timestamp: "1700000000".into(),
                nonce: "n1".into(),
                encrypt: encrypt.clone(),
            },
            0,
        )
        .unwrap();
        assert_eq!(sig, field("msg_signature"));
        let back = run(
            &CryptoCommand::Decrypt {
                aes_key: key.into(),
                receive_id: None,
                token: None,
                query: None,
                signature: None,
                timestamp: None,
                nonce: None,
                input: format!("{{\"encrypt\": \"{encrypt}\"}}"),
            },
            0,
        )
        .unwrap();
        assert_eq!(back, "receive_id: wwcorp\n<xml>hi</xml>");
        let bad_key = run(
            &CryptoCommand::Decrypt {
                aes_key: "short".into(),
                receive_id: None,
                token: None,
                query: None,
                signature: None,
                timestamp: None,
                nonce: None,
                input: encrypt,
            },
            0,
        )
        .unwrap_err();
        assert!(bad_key.contains("EncodingAESKey"), "{bad_key}");
    }
}
