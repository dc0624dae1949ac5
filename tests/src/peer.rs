//! wechatpy as a live peer, over JSON lines on a child process's stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

use crate::workspace_root;

/// The Python interpreter that has wechatpy: `WECOM_RELAY_PYTHON`, else `.venv/bin/python`.
///
/// # Panics
/// When neither exists, with the command that sets it up: a missing peer must fail the suite,
/// not skip it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WECOM_RELAY_PYTHON") {
        return p.into();
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the wechatpy peer needs {}: run `scripts/test.sh` once (or set WECOM_RELAY_PYTHON)",
        venv.display()
    );
    venv
}

/// One app's crypto settings, as the peer needs them.
#[derive(Debug, Clone)]
pub struct PeerApp {
    /// Callback token.
    pub token: String,
    /// EncodingAESKey.
    pub key: String,
    /// CorpID.
    pub corp_id: String,
    /// AgentId.
    pub agent_id: String,
}

/// A callback as WeCom would send it.
#[derive(Debug, Clone)]
pub struct EncryptedCallback {
    /// The query string (`msg_signature`, `timestamp`, `nonce`).
    pub query: String,
    /// The XML body.
    pub body: String,
    /// The `<Encrypt>` text.
    pub encrypt: String,
    /// `msg_signature`.
    pub signature: String,
}

/// A running wechatpy peer. Dropping it ends the process.
pub struct WechatpyPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl WechatpyPeer {
    /// Starts the peer.
    pub fn start() -> Self {
        let script = workspace_root().join("tests/peers/wechatpy_peer.py");
        let mut child = Command::new(python())
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the wechatpy peer");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one request and reads its answer.
    pub fn call(&mut self, req: Value) -> Value {
        writeln!(self.stdin, "{req}").expect("write to peer");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from peer");
        assert!(
            !line.is_empty(),
            "the wechatpy peer exited (is wechatpy installed?)"
        );
        serde_json::from_str(&line).expect("peer speaks json")
    }

    fn base(app: &PeerApp, op: &str) -> Value {
        json!({"op": op, "token": app.token, "key": app.key, "corp_id": app.corp_id, "agent_id": app.agent_id})
    }

    /// wechatpy encrypts `plaintext` as a callback POST.
    pub fn encrypt_callback(
        &mut self,
        app: &PeerApp,
        plaintext: &str,
        timestamp: &str,
        nonce: &str,
    ) -> EncryptedCallback {
        let mut req = Self::base(app, "encrypt_callback");
        req["plaintext"] = plaintext.into();
        req["timestamp"] = timestamp.into();
        req["nonce"] = nonce.into();
        let out = self.call(req);
        assert!(out.get("error").is_none(), "peer failed: {out}");
        let s = |k: &str| out[k].as_str().expect(k).to_string();
        EncryptedCallback {
            query: s("query"),
            body: s("body"),
            encrypt: s("encrypt"),
            signature: s("signature"),
        }
    }

    /// wechatpy builds a URL-verification query for `echo`.
    pub fn verify_url_query(
        &mut self,
        app: &PeerApp,
        echo: &str,
        timestamp: &str,
        nonce: &str,
    ) -> String {
        let mut req = Self::base(app, "verify_url_request");
        req["echo"] = echo.into();
        req["timestamp"] = timestamp.into();
        req["nonce"] = nonce.into();
        let out = self.call(req);
        assert!(out.get("error").is_none(), "peer failed: {out}");
        out["query"].as_str().expect("query").to_string()
    }

    /// wechatpy decrypts (and verifies) what we encrypted. `Err` carries wechatpy's complaint.
    pub fn decrypt(
        &mut self,
        app: &PeerApp,
        encrypt: &str,
        signature: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Result<String, String> {
        let mut req = Self::base(app, "decrypt");
        req["encrypt"] = encrypt.into();
        req["signature"] = signature.into();
        req["timestamp"] = timestamp.into();
        req["nonce"] = nonce.into();
        let out = self.call(req);
        match out.get("plaintext").and_then(Value::as_str) {
            Some(p) => Ok(p.to_string()),
            None => Err(out["error"].to_string()),
        }
    }
}

/// What the peer needs of an AI bot: its token and key (the receive id is always "").
#[derive(Debug, Clone)]
pub struct PeerBot {
    /// Callback token.
    pub token: String,
    /// EncodingAESKey.
    pub key: String,
}

impl WechatpyPeer {
    fn bot_base(bot: &PeerBot, op: &str) -> Value {
        json!({"op": op, "token": bot.token, "key": bot.key})
    }

    /// The peer encrypts `plaintext` (JSON) as an AI bot callback: (query, body).
    pub fn bot_callback(
        &mut self,
        bot: &PeerBot,
        plaintext: &str,
        timestamp: &str,
        nonce: &str,
    ) -> (String, String) {
        let mut req = Self::bot_base(bot, "bot_callback");
        req["plaintext"] = plaintext.into();
        req["timestamp"] = timestamp.into();
        req["nonce"] = nonce.into();
        let out = self.call(req);
        assert!(out.get("error").is_none(), "peer failed: {out}");
        (
            out["query"].as_str().expect("query").into(),
            out["body"].as_str().expect("body").into(),
        )
    }

    /// The peer seals a medium with the bot's key, as WeCom serves an AI bot's media.
    pub fn bot_seal_media(&mut self, bot: &PeerBot, data: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut req = Self::bot_base(bot, "bot_seal_media");
        req["data"] = b64.encode(data).into();
        let out = self.call(req);
        assert!(out.get("error").is_none(), "peer failed: {out}");
        b64.decode(out["sealed"].as_str().expect("sealed")).unwrap()
    }

    /// The peer builds an AI bot's URL-verification query for `echo`.
    pub fn bot_verify_url(
        &mut self,
        bot: &PeerBot,
        echo: &str,
        timestamp: &str,
        nonce: &str,
    ) -> String {
        let mut req = Self::bot_base(bot, "bot_verify_url");
        req["echo"] = echo.into();
        req["timestamp"] = timestamp.into();
        req["nonce"] = nonce.into();
        let out = self.call(req);
        assert!(out.get("error").is_none(), "peer failed: {out}");
        out["query"].as_str().expect("query").into()
    }

    /// The peer verifies and opens an AI bot's passive reply: (plaintext, timestamp, nonce).
    pub fn bot_open_reply(
        &mut self,
        bot: &PeerBot,
        body: &str,
    ) -> Result<(String, String, String), String> {
        let mut req = Self::bot_base(bot, "bot_open_reply");
        req["body"] = body.into();
        let out = self.call(req);
        match out.get("plaintext").and_then(Value::as_str) {
            Some(p) => Ok((
                p.into(),
                out["timestamp"].as_str().unwrap_or_default().into(),
                out["nonce"].as_str().unwrap_or_default().into(),
            )),
            None => Err(out["error"].to_string()),
        }
    }
}

impl Drop for WechatpyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
