//! A user's own agent behind the webhook backend: `tests/peers/webhook_receiver.py`, written
//! independently of the relay, checks the signature with Python's `hmac`, and answers at once
//! or later through `/api/send`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::harness::{free_port, Scenario};
use crate::peer::python;

/// The webhook's secret in the tests.
pub const SECRET: &str = "webhook-secret-0123456789abcdef";
/// The relay's `/api/send` token in the tests.
pub const API_TOKEN: &str = "send-api-token-0123456789";

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

/// Starts a receiver and points `scenario` at it: the webhook agent with [`SECRET`], and
/// `/api/send` with [`API_TOKEN`] on a port chosen after the receiver bound its own (so the
/// two cannot collide), which the receiver is told.
pub async fn serve_webhook(scenario: &mut Scenario) -> Receiver {
    let receiver = Receiver::start(SECRET, API_TOKEN);
    let port = free_port();
    receiver
        .set_send_url(&format!("http://127.0.0.1:{port}/api/send"))
        .await;
    scenario.port = port;
    scenario.api_token = Some(API_TOKEN.into());
    scenario.agent = vec![
        ("AGENT_KIND".into(), "webhook".into()),
        (
            "AGENT_URL".into(),
            format!("http://127.0.0.1:{}/hook", receiver.port),
        ),
        ("AGENT_SECRET".into(), SECRET.into()),
    ];
    receiver
}
