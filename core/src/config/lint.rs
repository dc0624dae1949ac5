//! Every problem of the settings as written, not only the first one `resolve` stops at: what
//! `wecom-relay check-config` prints. Errors stop `serve`; warnings name what works but is
//! probably not what was meant.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{RawAgentSettings, RawSettings};
use crate::aibot::Bots;
use crate::apps::Apps;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `serve` refuses to start.
    Error,
    /// It starts, but probably not as meant.
    Warning,
}

/// One problem, with the key's path (`apps[1].encoding_aes_key`, `agent.model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The key's path.
    pub key: String,
    /// What is wrong, never a secret.
    pub problem: String,
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level} {}: {}", self.key, self.problem)
    }
}

/// Re-indexes a one-element list's key (`apps[0].x`) to the element's place (`apps[3].x`).
fn at_index(key: &str, list: &str, i: usize) -> String {
    let first = format!("{list}[0]");
    match key.strip_prefix(&first) {
        Some(rest) => format!("{list}[{i}]{rest}"),
        None => key.to_string(),
    }
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]")
}

impl RawSettings {
    /// Every problem of these settings and `agent`'s, errors first.
    pub fn problems(&self, agent: &RawAgentSettings) -> Vec<Problem> {
        let mut out: Vec<Problem> = Vec::new();
        let error = |key: String, problem: String| Problem {
            severity: Severity::Error,
            key,
            problem,
        };
        // Each app and bot on its own, so one bad entry does not hide the next.
        match self.app_configs() {
            Err(e) => out.push(error(e.key, e.problem)),
            Ok((configs, single)) => {
                for (i, c) in configs.iter().enumerate() {
                    if let Err(e) = Apps::from_configs(core::slice::from_ref(c), single) {
                        out.push(error(at_index(&e.key, "apps", i), e.problem));
                    }
                }
            }
        }
        match self.bot_configs() {
            Err(e) => out.push(error(e.key, e.problem)),
            Ok(configs) => {
                for (i, c) in configs.iter().enumerate() {
                    if let Err(e) = Bots::from_configs(core::slice::from_ref(c), None) {
                        out.push(error(at_index(&e.key, "bots", i), e.problem));
                    }
                }
            }
        }
        let resolved = self.resolve();
        if let Err(e) = &resolved {
            if !out.iter().any(|p| p.key == e.key) {
                out.push(error(e.key.clone(), e.problem.clone()));
            }
        }
        if let Err(e) = agent.resolve() {
            out.push(error(e.key, e.problem));
        }
        let Ok(settings) = resolved else {
            return out;
        };
        let mut warn = |key: &str, problem: String| {
            out.push(Problem {
                severity: Severity::Warning,
                key: key.to_string(),
                problem,
            })
        };
        if !settings.api_base.starts_with("https://") && !is_loopback_url(&settings.api_base) {
            warn(
                "api_base",
                "is not https: tokens and messages would cross the network in the clear".into(),
            );
        }
        if settings.policy.denies_all() && !settings.apps.is_empty() {
            warn(
                "allowed_users",
                "is empty: every user is denied (list users, or set allow_all_users)".into(),
            );
        }
        for entry in self.allowed_users.iter().flatten() {
            let Some((corp, _)) = entry.split_once(':') else {
                continue;
            };
            if !settings.apps.iter().any(|a| a.corp_id.as_str() == corp) {
                warn(
                    "allowed_users",
                    format!("{entry:?} names corp {corp:?}, which no app belongs to"),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    #[test]
    fn every_problem_once_with_its_path() {
        let mut raw = RawSettings::default();
        let apps = format!(
            r#"[{{"name":"a","corp_id":"ww1","corp_secret":"s","agent_id":"1","token":"t","encoding_aes_key":"{KEY}"}},
                {{"name":"b","corp_id":"ww1","corp_secret":"","agent_id":"2","token":"t","encoding_aes_key":"{KEY}"}},
                {{"name":"c","corp_id":"ww1","corp_secret":"s","agent_id":"3","token":"t","encoding_aes_key":"too-short"}}]"#
        );
        raw.set("apps_json", apps).unwrap();
        raw.set("api_base", "http://proxy.example:8080".into())
            .unwrap();
        raw.set("allowed_users", "ww9:alice".into()).unwrap();
        let agent = RawAgentSettings {
            kind: Some("openai".into()),
            ..RawAgentSettings::default()
        };
        let problems = raw.problems(&agent);
        let keys: Vec<(Severity, &str)> = problems
            .iter()
            .map(|p| (p.severity, p.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (Severity::Error, "apps[1].corp_secret"),
                (Severity::Error, "apps[2].encoding_aes_key"),
                (Severity::Error, "agent.base_url"),
            ],
            "{problems:#?}"
        );
        // Fixed, the warnings show.
        let good = format!(
            r#"[{{"name":"a","corp_id":"ww1","corp_secret":"s","agent_id":"1","token":"t","encoding_aes_key":"{KEY}"}}]"#
        );
        raw.set("apps_json", good).unwrap();
        let problems = raw.problems(&RawAgentSettings::default());
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "warning api_base: is not https: tokens and messages would cross the network in the clear",
                "warning allowed_users: \"ww9:alice\" names corp \"ww9\", which no app belongs to",
            ]
        );
        raw.set("api_base", "http://127.0.0.1:9".into()).unwrap();
        raw.set("allowed_users", "ww1:alice".into()).unwrap();
        assert!(raw.problems(&RawAgentSettings::default()).is_empty());
    }
}
