//! A user's own agent behind the webhook backend: `tests/peers/webhook_receiver.py`, written
//! independently of the relay, checks the signature with Python's `hmac`, and answers at once
//! or later through `/api/send`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::peer::python;

/// The running receiver.
pub struct Receiver {
    child: Child,
    /// Where it listens.
    pub port: u16,
}

impl Receiver {
    /// Starts it with the webhook secret and the relay's `/api/send` token.
    pub fn start(secret: &str, api_token: &str) -> Self {
        let script = crate::workspace_root().join("tests/peers/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args([secret, api_token])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the webhook receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            port: line.trim().parse().expect("the receiver prints its port"),
            child,
        }
    }

    /// Tells it where the relay's `/api/send` is.
    pub async fn set_send_url(&self, url: &str) {
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/config", self.port))
            .body(serde_json::json!({"send_url": url}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }

    /// `{"verified", "rejected", "events"}`.
    pub async fn stats(&self) -> serde_json::Value {
        serde_json::from_str(
            &reqwest::get(format!("http://127.0.0.1:{}/stats", self.port))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
