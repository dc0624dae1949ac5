//! `wecom-relay check-config`: reads the settings as `serve` would (file, then environment),
//! prints each app and bot with its secrets redacted, and every problem, one per line with the
//! key's path. No network: `api-check` asks WeCom.

use std::fmt::Write as _;
use std::path::Path;

use wecom_relay_core::config::{Problem, Severity};
use wecom_relay_core::{RawAgentSettings, RawSettings};

use crate::config::{default_config_path, load, parse_yaml};

/// The report, and whether `serve` would start.
pub fn report(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> (String, bool) {
    let mut out = String::new();
    let source = path
        .map(Path::to_path_buf)
        .or_else(|| default_config_path(env));
    let _ = match &source {
        Some(p) => writeln!(
            out,
            "config: {} (then WECOM_CALLBACK_*, AGENT_* and WECOM_RELAY_* variables)",
            p.display()
        ),
        None => writeln!(
            out,
            "config: no file (WECOM_CALLBACK_*, AGENT_* and WECOM_RELAY_* variables only)"
        ),
    };
    let mut problems: Vec<Problem> = Vec::new();
    let read = match &source {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
            .and_then(|text| parse_yaml(&text).map_err(|e| e.to_string())),
        None => Ok((
            RawSettings::default(),
            RawAgentSettings::default(),
            Default::default(),
        )),
    };
    match read {
        Err(why) => problems.push(Problem {
            severity: Severity::Error,
            key: "config.yaml".into(),
            problem: why,
        }),
        Ok((mut raw, mut agent, _)) => {
            if let Err(e) = raw.apply_env(env) {
                problems.push(Problem {
                    severity: Severity::Error,
                    key: e.key,
                    problem: e.problem,
                });
            }
            agent.apply_env(env);
            problems.extend(raw.problems(&agent));
        }
    }
    // What `serve` itself refuses that is not a setting of the core (the `relay:` section).
    match load(path, env) {
        Err(e) if !problems.iter().any(|p| p.key == e.key) => problems.push(Problem {
            severity: Severity::Error,
            key: e.key,
            problem: e.problem,
        }),
        Err(_) => {}
        Ok(cfg) => {
            for app in cfg.settings.apps.iter() {
                let _ = writeln!(
                    out,
                    "app {}: corp {}, agent {}, token {} characters, key {} (fingerprint), secret set",
                    app.name,
                    app.corp_id,
                    app.agent_id.0,
                    app.crypt.token().len(),
                    app.crypt.key().fingerprint()
                );
            }
            for bot in cfg.settings.bots.iter() {
                let _ = writeln!(
                    out,
                    "bot {}: path {}, key {} (fingerprint)",
                    bot.name,
                    bot.path,
                    bot.crypt().key().fingerprint()
                );
            }
            let _ = writeln!(
                out,
                "callback path: {} (paste https://<your domain>{} into the app's 接收消息 settings)",
                cfg.settings.path, cfg.settings.path
            );
            let _ = writeln!(out, "agent: {:?}", cfg.agent.backend);
        }
    }
    problems.sort_by_key(|p| p.severity);
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    for p in &problems {
        let _ = writeln!(out, "{p}");
    }
    let _ = match (errors, problems.len() - errors) {
        (0, 0) => writeln!(out, "ok: serve would start with these settings"),
        (0, w) => writeln!(out, "ok with {w} warning(s): serve would start"),
        (e, _) => writeln!(out, "{e} error(s): serve would refuse to start"),
    };
    (out, errors == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_good_file_lists_apps_redacted_and_a_broken_one_every_problem() {
        let dir = std::env::temp_dir().join(format!("wecom-relay-check-{}", std::process::id()));
        let good = format!(
            "platforms:\n  wecom_callback:\n    extra:\n      corp_id: ww1\n      corp_secret: SECRET-VALUE-123\n      agent_id: 1000002\n      token: TOKEN-VALUE\n      encoding_aes_key: {KEY}\n      allowed_users: [alice]\n"
        );
        let no_env = |_: &str| None;
        let (out, ok) = report(Some(&write(&dir, &good)), &no_env);
        assert!(ok, "{out}");
        assert!(
            out.contains("app ww1-1000002: corp ww1, agent 1000002"),
            "{out}"
        );
        assert!(out.contains("ok: serve would start"), "{out}");
        for secret in ["SECRET-VALUE-123", "TOKEN-VALUE", KEY] {
            assert!(!out.contains(secret), "{out}");
        }
        let broken = format!(
            "platforms:\n  wecom_callback:\n    extra:\n      apps:\n        - {{name: a, corp_id: ww1, corp_secret: s, agent_id: 1, token: t, encoding_aes_key: short}}\n        - {{name: b, corp_id: ww1, corp_secret: '', agent_id: 2, token: t, encoding_aes_key: {KEY}}}\nagent:\n  kind: webhook\nrelay:\n  log_format: xml\n"
        );
        let (out, ok) = report(Some(&write(&dir, &broken)), &no_env);
        assert!(!ok, "{out}");
        for key in [
            "error apps[0].encoding_aes_key",
            "error apps[1].corp_secret",
            "error agent.url",
            "error relay.log_format",
        ] {
            assert_eq!(out.matches(key).count(), 1, "{key}: {out}");
        }
        assert!(
            out.contains("error(s): serve would refuse to start"),
            "{out}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The shipped example passes, and names every setting there is.
    #[test]
    fn the_example_config_is_complete_and_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.yaml");
        let (out, ok) = report(Some(&path), &|_: &str| None);
        assert!(ok && !out.contains("warning"), "{out}");
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = wecom_relay_core::config::KEYS
            .iter()
            .chain(wecom_relay_core::config::AGENT_KEYS)
            .chain(
                wecom_relay_core::config::BOT_KEYS
                    .iter()
                    .filter(|k| **k != "bots_json"),
            )
            .chain(&[
                "bots",
                "apps",
                "allow_hosts",
                "state_dir",
                "redis_url",
                "redis_lease_secs",
            ]);
        for key in keys {
            assert!(
                text.contains(&format!(" {key}:")) || text.contains(&format!("# {key}:")),
                "config.example.yaml does not mention {key}"
            );
        }
    }
}
