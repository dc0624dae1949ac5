//! Prometheus metrics, served as text on `GET /metrics`: the core's events, counted.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wecom_relay_core::Event;

/// Label: what became of a callback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// e.g. `accepted`, `duplicate`, `denied`, `bad_signature`. The core's labels are static,
    /// so counting a callback allocates nothing.
    pub outcome: &'static str,
}

/// Labels of a sent or failed reply part.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    /// `sent` or `failed`.
    pub result: String,
    /// WeCom's errcode, or `transport`.
    pub errcode: String,
}

/// Label: why a job is tried again.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// WeCom's errcode, `http_<status>`, `transport` or `agent`.
    pub reason: String,
}

/// Label: did a token refresh work.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// All metrics of one relay.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    callbacks: Family<OutcomeLabel, Counter>,
    bot_callbacks: Family<OutcomeLabel, Counter>,
    replies: Family<ReplyLabels, Counter>,
    token_refreshes: Family<ResultLabel, Counter>,
    retries: Family<ReasonLabel, Counter>,
    queue_depth: Gauge,
    agent_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wecom_relay");
        let callbacks = Family::<OutcomeLabel, Counter>::default();
        let bot_callbacks = Family::<OutcomeLabel, Counter>::default();
        let replies = Family::<ReplyLabels, Counter>::default();
        let token_refreshes = Family::<ResultLabel, Counter>::default();
        let retries = Family::<ReasonLabel, Counter>::default();
        let queue_depth = Gauge::default();
        let agent_latency = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "callbacks",
            "Callbacks received, by outcome",
            callbacks.clone(),
        );
        registry.register(
            "bot_callbacks",
            "AI bot callbacks received, by outcome (feedback counts users' ratings)",
            bot_callbacks.clone(),
        );
        registry.register(
            "replies",
            "Reply messages sent or failed, by errcode",
            replies.clone(),
        );
        registry.register(
            "token_refreshes",
            "Access token fetches, by result",
            token_refreshes.clone(),
        );
        registry.register(
            "job_retries",
            "Job attempts that failed and were scheduled again, by reason",
            retries.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting or running",
            queue_depth.clone(),
        );
        registry.register(
            "agent_latency_seconds",
            "Time the agent took to answer",
            agent_latency.clone(),
        );
        // Series that exist from the start, so dashboards and alerts see zeros, not gaps.
        let _ = replies.get_or_create(&ReplyLabels {
            result: "sent".into(),
            errcode: "0".into(),
        });
        for result in ["ok", "error"] {
            let _ = token_refreshes.get_or_create(&ResultLabel { result });
        }
        let _ = callbacks.get_or_create(&OutcomeLabel {
            outcome: "accepted",
        });
        Self {
            registry,
            callbacks,
            bot_callbacks,
            replies,
            token_refreshes,
            retries,
            queue_depth,
            agent_latency,
        }
    }
}

impl Metrics {
    /// Counts a callback.
    pub fn callback(&self, outcome: &'static str) {
        self.callbacks
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts reply parts.
    pub fn replies(&self, result: &str, errcode: &str, n: u64) {
        if n > 0 {
            self.replies
                .get_or_create(&ReplyLabels {
                    result: result.into(),
                    errcode: errcode.into(),
                })
                .inc_by(n);
        }
    }

    /// Counts a token fetch.
    pub fn token_refresh(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.token_refreshes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Sets the queue depth.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Records how long the agent took.
    pub fn agent_latency(&self, secs: f64) {
        self.agent_latency.observe(secs);
    }

    /// Counts what an event says.
    pub fn record(&self, event: &Event<'_>) {
        match event {
            Event::Verified { .. } => self.callback("verified"),
            Event::VerifyRefused(rejection) => self.callback(rejection.outcome()),
            Event::Callback(outcome) => self.callback(outcome.label()),
            Event::Bot(outcome) => {
                self.bot_callbacks
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.label(),
                    })
                    .inc();
            }
            Event::ResponseUrl { ok: true, .. } => self.replies("sent", "0", 1),
            Event::ResponseUrl { ok: false, .. } => self.replies("failed", "response_url", 1),
            Event::Job(report) => {
                self.replies("sent", "0", report.parts_sent as u64);
                if let Some(label) = report.failure_label() {
                    self.replies("failed", &label, 1);
                }
            }
            Event::SendDone { parts, .. } => self.replies("sent", "0", *parts as u64),
            Event::AttachmentFailed { .. } => self.replies("failed", "attachment", 1),
            Event::SendFailed { sent, .. } => self.replies("sent", "0", *sent as u64),
            Event::TokenFetched { ok } => self.token_refresh(*ok),
            Event::AgentAnswered { millis } => self.agent_latency(*millis as f64 / 1000.0),
            Event::Retrying { error, .. } => {
                self.retries
                    .get_or_create(&ReasonLabel {
                        reason: error.label(),
                    })
                    .inc();
            }
            Event::Paced { .. }
            | Event::SendPaced { .. }
            | Event::SendRefused { .. }
            | Event::Unrouted { .. }
            | Event::Misconfigured(_)
            | Event::HeldBack { .. } => {}
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
