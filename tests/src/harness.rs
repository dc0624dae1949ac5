//! Starting a twin for a scenario: the stand-in for WeCom's API, the relay on a real socket
//! (the `wecom-relay` binary for the native twin), and helpers to wait for what arrives.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wecom_relay_standin::wecom::{Delivered, RunningStandin, Standin, StandinApp};

use crate::peer::{PeerApp, WechatpyPeer};

/// One app of a scenario, as both the relay and the stand-in see it.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Name.
    pub name: String,
    /// CorpID.
    pub corp_id: String,
    /// Secret.
    pub secret: String,
    /// AgentId.
    pub agent_id: u64,
    /// Callback token.
    pub token: String,
    /// EncodingAESKey.
    pub key: String,
    /// Members the stand-in accepts as recipients.
    pub users: Vec<String>,
    /// Whether the stand-in trusts the caller's IP (else 60020).
    pub trusted: bool,
}

/// One AI bot of a scenario.
#[derive(Debug, Clone)]
pub struct BotSpec {
    /// Name.
    pub name: String,
    /// Callback token.
    pub token: String,
    /// EncodingAESKey.
    pub key: String,
    /// The bot's id in callbacks (`aibotid`).
    pub aibotid: String,
    /// Callback path (default `/wecom/aibot`).
    pub path: Option<String>,
    /// Its own `welcome_message`.
    pub welcome: Option<String>,
}

impl BotSpec {
    /// A bot with a key derived from `seed`.
    pub fn new(name: &str, seed: u8) -> Self {
        let key: String = (0..43)
            .map(|i| {
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                alphabet[(usize::from(seed) * 7 + i * 13) % alphabet.len()] as char
            })
            .collect();
        Self {
            name: name.into(),
            token: format!("bottoken{seed}"),
            key,
            aibotid: format!("aibot{seed}"),
            path: None,
            welcome: None,
        }
    }

    fn config(&self) -> Value {
        let mut v = json!({"name": self.name, "token": self.token, "encoding_aes_key": self.key});
        if let Some(path) = &self.path {
            v["path"] = json!(path);
        }
        if let Some(welcome) = &self.welcome {
            v["welcome_message"] = json!(welcome);
        }
        v
    }

    /// Where the relay serves it.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/wecom/aibot")
    }
}

impl AppSpec {
    /// An app with a key derived from `seed`.
    pub fn new(name: &str, corp_id: &str, agent_id: u64, seed: char, users: &[&str]) -> Self {
        Self {
            name: name.into(),
            corp_id: corp_id.into(),
            secret: format!("secret-of-{name}"),
            agent_id,
            token: format!("token{name}"),
            key: std::iter::repeat_n(seed, 42)
                .chain(std::iter::once('A'))
                .collect(),
            users: users.iter().map(|u| u.to_string()).collect(),
            trusted: true,
        }
    }

    /// The peer's view.
    pub fn peer(&self) -> PeerApp {
        PeerApp {
            token: self.token.clone(),
            key: self.key.clone(),
            corp_id: self.corp_id.clone(),
            agent_id: self.agent_id.to_string(),
        }
    }
}

/// What a scenario configures.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Apps.
    pub apps: Vec<AppSpec>,
    /// Allowlist entries.
    pub allowed_users: Vec<String>,
    /// Replay window; 0 disables.
    pub max_timestamp_skew_secs: u64,
    /// Deny notice.
    pub deny_message: Option<String>,
    /// Stand-in token lifetime.
    pub token_ttl: Duration,
    /// `AGENT_*` settings.
    pub agent: Vec<(String, String)>,
    /// The `/api/send` bearer token.
    pub api_token: Option<String>,
    /// The relay's port (0: any free one).
    pub port: u16,
    /// More environment for the native relay (`WECOM_RELAY_*` runtime settings).
    pub env: Vec<(String, String)>,
    /// Another stand-in's URL to use instead of this scenario's own (a second replica).
    pub api_base: Option<String>,
    /// How long dedup markers live (default: the replay window, at least 900 s).
    pub dedup_ttl_secs: Option<u64>,
    /// Log at debug level (`RUST_LOG=debug`, `wrangler dev --log-level debug`).
    pub debug_logs: bool,
    /// AI bots.
    pub bots: Vec<BotSpec>,
    /// `stream_limit_secs`.
    pub stream_limit_secs: Option<u64>,
    /// `welcome_message`.
    pub welcome_message: Option<String>,
    /// `menu_commands`: menu key to text.
    pub menu_commands: Vec<(String, String)>,
    /// `media.allow_hosts` (the native twin reads it from `config.yaml`'s `media:` section,
    /// the Worker from `WECOM_RELAY_MEDIA_ALLOW_HOSTS`).
    pub media_allow_hosts: Vec<String>,
}

impl Scenario {
    /// `menu_commands` as a JSON object.
    pub fn menu_commands_json(&self) -> Value {
        Value::Object(
            self.menu_commands
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    /// The dedup TTL to configure.
    pub fn dedup_ttl(&self) -> u64 {
        self.dedup_ttl_secs
            .unwrap_or(self.max_timestamp_skew_secs.max(900))
    }
}

impl Scenario {
    /// A scenario with these apps, everyone allowed.
    pub fn new(apps: Vec<AppSpec>) -> Self {
        Self {
            apps,
            allowed_users: vec!["*".into()],
            max_timestamp_skew_secs: 600,
            deny_message: None,
            token_ttl: Duration::from_secs(7200),
            agent: Vec::new(),
            api_token: None,
            port: 0,
            env: Vec::new(),
            api_base: None,
            dedup_ttl_secs: None,
            debug_logs: false,
            bots: Vec::new(),
            stream_limit_secs: None,
            welcome_message: None,
            menu_commands: Vec::new(),
            media_allow_hosts: Vec::new(),
        }
    }
}

/// Which twin runs the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twin {
    /// The `wecom-relay` binary.
    Native,
    /// The Worker under `wrangler dev` (workerd), jobs through `ctx.waitUntil`.
    Worker,
    /// The Worker under `wrangler dev` with a Queue bound (emulated by wrangler).
    WorkerQueue,
    /// The Worker under `wrangler dev` with its Durable Objects bound: per-user job objects
    /// and per-app token objects.
    WorkerObjects,
}

impl Twin {
    /// The twins to run, from `WECOM_RELAY_TWINS` (comma-separated; default `native`).
    pub fn selected() -> Vec<Twin> {
        let list = std::env::var("WECOM_RELAY_TWINS").unwrap_or_else(|_| "native".into());
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t {
                "native" => Twin::Native,
                "worker" => Twin::Worker,
                "worker-queue" => Twin::WorkerQueue,
                "worker-objects" => Twin::WorkerObjects,
                other => panic!("unknown twin {other:?} in WECOM_RELAY_TWINS"),
            })
            .collect()
    }
}

/// The `wecom-relay` binary next to the test executable (built by `cargo test --workspace` or
/// `cargo build -p wecom-relay`).
pub fn relay_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WECOM_RELAY_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let bin = dir.join("wecom-relay");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p wecom-relay` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback. Nothing holds it afterwards: bind it before anything else
/// of ours binds a port.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports (all held at once while chosen, so they differ).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    core::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A running relay with its stand-in.
pub struct Running {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The callback path.
    pub path: String,
    /// The stand-in.
    pub standin: RunningStandin,
    /// The scenario.
    pub scenario: Scenario,
    child: Option<Child>,
    log: PathBuf,
    dir: PathBuf,
    port: u16,
    spawn: Box<dyn Fn(u16, std::fs::File) -> Child + Send + Sync>,
}

impl Running {
    /// Starts `twin` for `scenario`.
    pub async fn start(twin: Twin, scenario: Scenario) -> Self {
        let standin = Standin::new(
            scenario
                .apps
                .iter()
                .map(|a| StandinApp {
                    corp_id: a.corp_id.clone(),
                    corp_secret: a.secret.clone(),
                    agent_id: a.agent_id,
                    users: a.users.clone(),
                    trusted: a.trusted,
                })
                .collect(),
            scenario.token_ttl,
        )
        .serve(0)
        .await
        .expect("stand-in listens");
        match twin {
            Twin::Native => Self::start_native(scenario, standin).await,
            twin => Self::start_worker(scenario, standin, twin).await,
        }
    }

    fn scratch_dir() -> PathBuf {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wecom-relay-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The Worker's vars for a scenario: the same names a deployment uses.
    pub fn worker_vars(scenario: &Scenario, api_base: &str) -> Value {
        let apps: Vec<Value> = scenario
            .apps
            .iter()
            .map(|a| json!({"name": a.name, "corp_id": a.corp_id, "corp_secret": a.secret, "agent_id": a.agent_id, "token": a.token, "encoding_aes_key": a.key}))
            .collect();
        let mut vars = json!({
            "WECOM_CALLBACK_APPS_JSON": serde_json::to_string(&apps).unwrap(),
            "WECOM_CALLBACK_API_BASE": api_base,
            "WECOM_CALLBACK_ALLOWED_USERS": scenario.allowed_users.join(","),
            "WECOM_CALLBACK_MAX_TIMESTAMP_SKEW_SECS": scenario.max_timestamp_skew_secs.to_string(),
            "WECOM_CALLBACK_DEDUP_TTL_SECS": scenario.dedup_ttl().to_string(),
            "WECOM_CALLBACK_DENY_MESSAGE": scenario.deny_message.clone().unwrap_or_default(),
        });
        let map = vars.as_object_mut().unwrap();
        for (k, v) in &scenario.agent {
            map.insert(k.clone(), Value::String(v.clone()));
        }
        if let Some(token) = &scenario.api_token {
            map.insert(
                "WECOM_CALLBACK_API_TOKEN".into(),
                Value::String(token.clone()),
            );
        }
        if !scenario.bots.is_empty() {
            let bots: Vec<Value> = scenario.bots.iter().map(BotSpec::config).collect();
            map.insert(
                "WECOM_AIBOT_BOTS_JSON".into(),
                Value::String(serde_json::to_string(&bots).unwrap()),
            );
        }
        if let Some(secs) = scenario.stream_limit_secs {
            map.insert(
                "WECOM_CALLBACK_STREAM_LIMIT_SECS".into(),
                Value::String(secs.to_string()),
            );
        }
        if let Some(welcome) = &scenario.welcome_message {
            map.insert(
                "WECOM_CALLBACK_WELCOME_MESSAGE".into(),
                Value::String(welcome.clone()),
            );
        }
        if !scenario.menu_commands.is_empty() {
            map.insert(
                "WECOM_CALLBACK_MENU_COMMANDS".into(),
                Value::String(scenario.menu_commands_json().to_string()),
            );
        }
        if !scenario.media_allow_hosts.is_empty() {
            map.insert(
                "WECOM_RELAY_MEDIA_ALLOW_HOSTS".into(),
                Value::String(scenario.media_allow_hosts.join(",")),
            );
        }
        vars
    }

    /// Starts `wrangler dev` on the prebuilt Worker with a generated config.
    pub async fn start_worker(scenario: Scenario, standin: RunningStandin, twin: Twin) -> Self {
        let vars = Self::worker_vars(&scenario, &standin.base_url());
        Self::start_worker_with_vars(scenario, standin, twin, vars).await
    }

    /// Like [`Running::start_worker`], with explicit vars (to test bad settings).
    pub async fn start_worker_with_vars(
        scenario: Scenario,
        standin: RunningStandin,
        twin: Twin,
        vars: Value,
    ) -> Self {
        let root = crate::workspace_root();
        let shim = root.join("worker/build/worker/shim.mjs");
        assert!(
            shim.exists(),
            "{} is missing: run scripts/worker-build.sh (scripts/test.sh does)",
            shim.display()
        );
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(
            wrangler.exists(),
            "wrangler is missing: run `npm ci` (scripts/test.sh does)"
        );
        let dir = Self::scratch_dir();
        // Credentials are secrets, as in a deployment: locally they come from `.dev.vars`
        // beside the config (wrangler shows them as hidden); the rest are plain vars.
        let mut vars = vars;
        let mut secrets = String::new();
        for name in [
            "WECOM_CALLBACK_APPS_JSON",
            "WECOM_CALLBACK_CORP_SECRET",
            "WECOM_CALLBACK_TOKEN",
            "WECOM_CALLBACK_ENCODING_AES_KEY",
            "WECOM_CALLBACK_API_TOKEN",
            "WECOM_AIBOT_BOTS_JSON",
            "AGENT_API_KEY",
            "AGENT_SECRET",
        ] {
            if let Some(value) = vars.as_object_mut().and_then(|v| v.remove(name)) {
                let value = value.as_str().unwrap_or_default().to_owned();
                assert!(
                    !value.contains('\''),
                    "secret values are written single-quoted"
                );
                secrets.push_str(&format!("{name}='{value}'\n"));
            }
        }
        std::fs::write(dir.join(".dev.vars"), secrets).unwrap();
        let mut config = json!({
            "name": "wecom-relay-test",
            "main": shim,
            "compatibility_date": "2026-04-01",
            "kv_namespaces": [{"binding": "WECOM_RELAY_KV", "id": "wecom-relay-test-kv"}],
            "vars": vars,
        });
        // Every Worker setup binds the AI bot's stream objects: bots need them.
        let streams = json!({"name": "WECOM_RELAY_STREAMS", "class_name": "BotStreams"});
        if twin == Twin::WorkerObjects {
            config["durable_objects"] = json!({"bindings": [
                {"name": "WECOM_RELAY_USERS", "class_name": "UserJobs"},
                {"name": "WECOM_RELAY_TOKENS", "class_name": "AppTokens"},
                streams,
            ]});
            config["migrations"] = json!([
                {"tag": "v1", "new_sqlite_classes": ["UserJobs", "AppTokens"]},
                {"tag": "v2", "new_sqlite_classes": ["BotStreams"]},
            ]);
        } else {
            config["durable_objects"] = json!({"bindings": [streams]});
            config["migrations"] = json!([{"tag": "v1", "new_sqlite_classes": ["BotStreams"]}]);
        }
        if twin == Twin::WorkerQueue {
            config["queues"] = json!({
                "producers": [{"binding": "WECOM_RELAY_QUEUE", "queue": "wecom-relay-jobs"}],
                "consumers": [{"queue": "wecom-relay-jobs", "max_batch_size": 10, "max_batch_timeout": 1,
                               "max_retries": 5, "dead_letter_queue": "wecom-relay-dlq"}],
            });
        }
        let config_path = dir.join("wrangler.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let log = dir.join("relay.log");
        let state = dir.join("state");
        let work_dir = dir.clone();
        let wrangler_logs = dir.join("wrangler-logs");
        let log_level = if scenario.debug_logs { "debug" } else { "log" };
        let spawn = move |port: u16, log_file: std::fs::File| {
            let inspector = loop {
                let p = free_port();
                if p != port {
                    break p;
                }
            };
            Command::new(&wrangler)
                .args(["dev", "--config"])
                .arg(&config_path)
                .args([
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--inspector-port",
                    &inspector.to_string(),
                ])
                .arg("--persist-to")
                .arg(&state)
                .args([
                    "--show-interactive-dev-session=false",
                    "--log-level",
                    log_level,
                ])
                .current_dir(&work_dir)
                .env("CI", "true")
                .env("WRANGLER_SEND_METRICS", "false")
                .env("NO_COLOR", "1")
                .env("FORCE_COLOR", "0")
                // No fetch of the Request.cf object from Cloudflare: tests talk to loopback only.
                .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
                .env("WRANGLER_LOG_PATH", &wrangler_logs)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("start wrangler dev")
        };
        Self::launch(scenario, standin, log, dir.clone(), spawn).await
    }

    async fn start_native(scenario: Scenario, standin: RunningStandin) -> Self {
        let dir = Self::scratch_dir();
        let apps: Vec<Value> = scenario
            .apps
            .iter()
            .map(|a| json!({"name": a.name, "corp_id": a.corp_id, "corp_secret": a.secret, "agent_id": a.agent_id, "token": a.token, "encoding_aes_key": a.key}))
            .collect();
        // A Hermes-shaped config.yaml; the allowlist and port come from the environment, the
        // way Hermes deployments override them.
        let config = json!({
            "model": "unused-by-the-relay",
            "platforms": {"wecom_callback": {"enabled": true, "extra": {
                "host": "127.0.0.1",
                "apps": apps,
                "api_base": scenario.api_base.clone().unwrap_or_else(|| standin.base_url()),
                "max_timestamp_skew_secs": scenario.max_timestamp_skew_secs,
                "dedup_ttl_secs": scenario.dedup_ttl(),
                "bots": scenario.bots.iter().map(BotSpec::config).collect::<Vec<_>>(),
                "stream_limit_secs": scenario.stream_limit_secs,
                "welcome_message": scenario.welcome_message,
                "menu_commands": scenario.menu_commands_json(),
            }}},
            "agent": {"kind": "echo"},
            "relay": {"drain_timeout_secs": 10, "api_timeout_secs": 5},
            "media": {"allow_hosts": scenario.media_allow_hosts},
        });
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
        let log = dir.join("relay.log");
        let mut agent = scenario.agent.clone();
        agent.extend(scenario.env.iter().cloned());
        let api_token = scenario.api_token.clone();
        let allowed = scenario.allowed_users.join(",");
        let deny = scenario.deny_message.clone();
        let debug_logs = scenario.debug_logs;
        let spawn = move |port: u16, log_file: std::fs::File| {
            let mut cmd = Command::new(relay_binary());
            cmd.env("RUST_LOG", if debug_logs { "debug" } else { "info" });
            for (k, v) in &agent {
                cmd.env(k, v);
            }
            if let Some(token) = &api_token {
                cmd.env("WECOM_CALLBACK_API_TOKEN", token);
            }
            if let Some(m) = &deny {
                cmd.env("WECOM_CALLBACK_DENY_MESSAGE", m);
            }
            cmd.arg("serve")
                .arg("--config")
                .arg(&config_path)
                .env("WECOM_CALLBACK_PORT", port.to_string())
                .env("WECOM_CALLBACK_ALLOWED_USERS", &allowed)
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("start wecom-relay")
        };
        Self::launch(scenario, standin, log, dir.clone(), spawn).await
    }

    /// Starts the relay with `spawn(port, log)` and waits until it answers `/health`. A free
    /// port can be taken by someone else between choosing and binding it (tests run in
    /// parallel, and workerd binds ports of its own), so a lost race is retried on another.
    async fn launch(
        scenario: Scenario,
        standin: RunningStandin,
        log: PathBuf,
        dir: PathBuf,
        spawn: impl Fn(u16, std::fs::File) -> Child + Send + Sync + 'static,
    ) -> Self {
        for attempt in 1..=4 {
            let port = if scenario.port == 0 {
                free_port()
            } else {
                scenario.port
            };
            let mut child = spawn(port, std::fs::File::create(&log).unwrap());
            let base = format!("http://127.0.0.1:{port}");
            if wait_healthy(&base, &mut child, &log).await {
                return Self {
                    base,
                    path: "/wecom/callback".into(),
                    standin,
                    scenario,
                    child: Some(child),
                    log,
                    dir,
                    port,
                    spawn: Box::new(spawn),
                };
            }
            stop(child);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if !(lost_port_race(&text) && scenario.port == 0 && attempt < 4) {
                panic!("the relay did not become healthy; its log:\n{text}");
            }
        }
        unreachable!()
    }

    /// Posts an encrypted callback, as WeCom does; the status it got.
    pub async fn post(&self, cb: &crate::peer::EncryptedCallback) -> u16 {
        reqwest::Client::new()
            .post(self.callback_url(&cb.query))
            .body(cb.body.clone())
            .send()
            .await
            .expect("the relay answers")
            .status()
            .as_u16()
    }

    /// Kills the relay with SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the relay with SIGKILL (no drain, no goodbye), then starts it again on the same
    /// port with the same settings and state, and waits until it is healthy.
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = (self.spawn)(self.port, log);
        assert!(
            wait_healthy(&self.base, &mut child, &self.log).await,
            "the relay did not come back; its log:\n{}",
            self.logs()
        );
        self.child = Some(child);
    }

    /// The relay's process id (the native twin's own; wrangler's for the Worker).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The relay process's resident memory in KiB, from `/proc` (native twin, Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The relay's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for a line after byte `since` of the log that contains `needle`;
    /// returns it.
    pub async fn log_line_after(
        &self,
        since: usize,
        needle: &str,
        limit: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let logs = self.logs();
            let tail = logs.get(since..).unwrap_or_default();
            if let Some(line) = tail.lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits up to 15 s for `needle` to appear in the relay's log; returns the log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The native twin's `config.yaml` (the Worker's settings are vars, not a file).
    pub fn config_path(&self) -> Option<PathBuf> {
        Some(self.dir.join("config.yaml")).filter(|p| p.is_file())
    }

    /// The callback URL with a query.
    pub fn callback_url(&self, query: &str) -> String {
        format!("{}{}?{}", self.base, self.path, query)
    }

    /// WeCom (the peer) posts a callback from `alice` through the first app: `inner` is the
    /// XML between `CreateTime` and `AgentID` (`MsgType` and the rest). Returns the status.
    pub async fn post_xml(&self, peer: &mut WechatpyPeer, nonce: &str, inner: &str) -> u16 {
        let a = &self.scenario.apps[0];
        let at = now();
        let xml = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[alice]]></FromUserName>\
             <CreateTime>{at}</CreateTime>{inner}<AgentID>{}</AgentID></xml>",
            a.corp_id, a.agent_id
        );
        let cb = peer.encrypt_callback(&a.peer(), &xml, &at.to_string(), nonce);
        reqwest::Client::new()
            .post(self.callback_url(&cb.query))
            .body(cb.body)
            .send()
            .await
            .expect("the relay answers")
            .status()
            .as_u16()
    }

    /// `alice` says `text` (message `msg_id`) through the first app; the relay must take it.
    pub async fn say(&self, peer: &mut WechatpyPeer, msg_id: u64, text: &str) {
        let inner = format!(
            "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{}]]></Content><MsgId>{msg_id}</MsgId>",
            text.replace("]]>", "]]]]><![CDATA[>")
        );
        let status = self.post_xml(peer, &format!("n{msg_id}"), &inner).await;
        assert_eq!(status, 200, "{}", self.logs());
    }

    /// Waits until the stand-in has received messages satisfying `done`, or 15 s.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[Delivered]) -> bool,
    ) -> Vec<Delivered> {
        self.wait_for_within(what, Duration::from_secs(15), done)
            .await
    }

    /// Waits until the stand-in has received messages satisfying `done`, or `limit`.
    pub async fn wait_for_within(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Delivered]) -> bool,
    ) -> Vec<Delivered> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.standin.standin.messages();
            if done(&got) {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; received {got:#?}\nrelay log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        false
    }
}

fn lost_port_race(log: &str) -> bool {
    log.contains("ddress already in use") || log.contains("AddrInUse")
}

/// Stops a relay: SIGTERM first (wrangler then stops its workerd; SIGKILL would orphan it).
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to 60 s for `/health`; false if the process exits, reports a port already in use,
/// or time runs out.
async fn wait_healthy(base: &str, child: &mut Child, log: &Path) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if std::fs::read_to_string(log).is_ok_and(|t| lost_port_race(&t)) {
            return false;
        }
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A WeCom text message XML.
pub fn text_xml(
    corp_id: &str,
    user: &str,
    agent_id: u64,
    msg_id: u64,
    content: &str,
    create_time: u64,
) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{}]]></Content>\
         <MsgId>{msg_id}</MsgId><AgentID>{agent_id}</AgentID></xml>",
        content.replace("]]>", "]]]]><![CDATA[>")
    )
}

/// A `redis-server` on a free loopback port for this test process, started on first use. It
/// dies with the test process: a watchdog shell stops it once its parent is gone.
pub fn redis_url(db: u8) -> String {
    static SERVER: std::sync::OnceLock<(u16, std::sync::Mutex<Child>)> = std::sync::OnceLock::new();
    let (port, _) = SERVER.get_or_init(|| {
        let port = free_port();
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & r=$!; \
             while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $r",
            parent = std::process::id()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("sh starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}: is it installed? (scripts/test.sh installs it)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (port, std::sync::Mutex::new(watchdog))
    });
    format!("redis://127.0.0.1:{port}/{db}")
}
