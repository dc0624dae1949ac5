//! `wecom-relay`: serve WeCom callbacks, or run the self-contained demo.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use wecom_relay::ports::SystemClock;
use wecom_relay::{config, http};

#[derive(Parser)]
#[command(
    name = "wecom-relay",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WECOM_RELAY_COMMIT"), ")"),
    about = "Relays WeCom self-built app callbacks to an AI agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the callback URL (settings: config.yaml, then WECOM_CALLBACK_* variables).
    Serve {
        /// A Hermes-style config.yaml (default: $WECOM_RELAY_CONFIG, ./config.yaml, ~/.hermes/config.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo: a local WeCom stand-in, the relay and the echo agent.
    #[cfg(feature = "demo")]
    Demo,
    /// Check the settings as serve would read them: each app and bot (secrets redacted), and
    /// every problem with its key's path. Exits 1 if serve would refuse to start.
    CheckConfig {
        /// The config.yaml to read (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Play WeCom against a deployed callback URL: a signed URL verification (the exact echo,
    /// within 1 s), an encrypted message, a wrong signature and a replay, each with the likely
    /// cause when it fails.
    Probe {
        /// The callback URL, e.g. https://your.domain/wecom/callback.
        url: String,
        /// Take the credentials from this config.yaml (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Which app (or bot, with --aibot) of the config, by name (default: the first).
        #[arg(long)]
        name: Option<String>,
        /// The Token, instead of a config.
        #[arg(long, requires = "aes_key")]
        token: Option<String>,
        /// The EncodingAESKey, instead of a config.
        #[arg(long, requires = "token")]
        aes_key: Option<String>,
        /// The CorpID, instead of a config (not for --aibot).
        #[arg(long, default_value = "")]
        corp_id: String,
        /// The AgentId, instead of a config.
        #[arg(long, default_value_t = 1000002)]
        agent_id: u64,
        /// Probe an AI bot's URL (JSON, receive id "").
        #[arg(long)]
        aibot: bool,
    },
    /// Ask WeCom about each configured app (gettoken, agent/get) and say what is wrong and what
    /// to do: a wrong secret or corp id, a wrong agent id, this host's IP not trusted (60020).
    ApiCheck {
        /// The config.yaml to read (default as for serve).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also send this member (a UserID) a test message through each app.
        #[arg(long)]
        send_to: Option<String>,
    },
    /// Ask a running relay's /health (a container's health check): exit 0 on 200.
    Health {
        /// The URL (default: http://127.0.0.1:$WECOM_CALLBACK_PORT/health, port 8645).
        #[arg(long)]
        url: Option<String>,
    },
    /// The WXBizMsgCrypt operations, for debugging captured requests: sign, encrypt, decrypt,
    /// verify-url.
    #[command(subcommand)]
    Crypto(wecom_relay::crypto_cmd::CryptoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::CheckConfig { config } => {
            let env = |k: &str| std::env::var(k).ok();
            let (report, ok) = wecom_relay::check_config::report(config.as_deref(), &env);
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Probe {
            url,
            config,
            name,
            token,
            aes_key,
            corp_id,
            agent_id,
            aibot,
        } => {
            let target = match (token, aes_key) {
                (Some(token), Some(key)) => {
                    let receive_id = if aibot { "" } else { corp_id.as_str() };
                    wecom_relay_core::crypto::MsgCrypt::new(&token, &key, receive_id)
                        .map(|crypt| wecom_relay::probe::Target {
                            url: url.clone(),
                            crypt,
                            agent_id,
                            aibot,
                        })
                        .map_err(|e| format!("--aes-key: {e}"))
                }
                _ => probe_target(url, config, name.as_deref(), aibot),
            };
            match target {
                Ok(target) => {
                    let (report, ok) = runtime.block_on(wecom_relay::probe::probe(&target));
                    print!("{report}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(why) => {
                    eprintln!("{why}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Health { url } => {
            let port = std::env::var("WECOM_CALLBACK_PORT").unwrap_or_else(|_| "8645".into());
            let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/health"));
            runtime.block_on(health(&url))
        }
        Command::ApiCheck { config, send_to } => runtime.block_on(api_check(config, send_to)),
        Command::Crypto(cmd) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match wecom_relay::crypto_cmd::run(&cmd, now) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("{why}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "demo")]
        Command::Demo => {
            if std::env::var_os("RUST_LOG").is_none() {
                std::env::set_var("RUST_LOG", "wecom_relay=info,warn");
            }
            // Each step's log lines print under its heading, not before it.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(|| wecom_relay::demo::StepLog)
                .try_init();
            match runtime.block_on(wecom_relay::demo::run()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("the demo did not behave as expected");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The probe's credentials from the config: the named (or first) app, or bot with `--aibot`.
fn probe_target(
    url: String,
    path: Option<PathBuf>,
    name: Option<&str>,
    aibot: bool,
) -> Result<wecom_relay::probe::Target, String> {
    let cfg = load_config(path)?;
    if aibot {
        let bot = cfg
            .settings
            .bots
            .iter()
            .find(|b| name.is_none_or(|n| b.name == n))
            .ok_or("no such AI bot in the configuration (give --token and --aes-key instead)")?;
        return Ok(wecom_relay::probe::Target {
            url,
            crypt: bot.crypt().clone(),
            agent_id: 0,
            aibot: true,
        });
    }
    let app = cfg
        .settings
        .apps
        .iter()
        .find(|a| name.is_none_or(|n| a.name == n))
        .ok_or(
            "no such app in the configuration (give --token, --aes-key and --corp-id instead)",
        )?;
    Ok(wecom_relay::probe::Target {
        url,
        crypt: app.crypt.clone(),
        agent_id: app.agent_id.0,
        aibot: false,
    })
}

async fn health(url: &str) -> ExitCode {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(resp) if resp.status().is_success() => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!("{url} answered {}", resp.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings as `serve` reads them, or the line saying why not.
fn load_config(path: Option<PathBuf>) -> Result<config::Config, String> {
    let env = |k: &str| std::env::var(k).ok();
    config::load(path.as_deref(), &env).map_err(|e| format!("configuration error: {e}"))
}

async fn api_check(path: Option<PathBuf>, send_to: Option<String>) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(cfg) => cfg,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(2);
        }
    };
    let http =
        wecom_relay::ports::ReqwestHttp::new(Duration::from_secs(cfg.runtime.api_timeout_secs));
    let (report, ok) =
        wecom_relay::api_check::check(&cfg.settings, &http, send_to.as_deref()).await;
    print!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(path: Option<PathBuf>) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(cfg) => cfg,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(2);
        }
    };
    // Held until serving ends: dropping it writes out the lines still buffered.
    let _log = init_logging(&cfg.runtime.log_format);
    let addr = format!("{}:{}", cfg.settings.host, cfg.settings.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(%addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let apps: Vec<String> = cfg.settings.apps.iter().map(|a| a.name.clone()).collect();
    let bots: Vec<String> = cfg
        .settings
        .bots
        .iter()
        .map(|b| format!("{} {}", b.name, b.path))
        .collect();
    if cfg.settings.policy.denies_all() {
        info!(
            "the allowlist is empty: every user is denied (set allowed_users or allow_all_users)"
        );
    }
    info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or(addr),
        path = %cfg.settings.path,
        apps = ?apps,
        bots = ?bots,
        config = ?cfg.source,
        api_base = %cfg.settings.api_base,
        "wecom-relay listening"
    );
    let drain = Duration::from_secs(cfg.runtime.drain_timeout_secs);
    let store = match (&cfg.runtime.state_dir, &cfg.runtime.redis_url) {
        (Some(dir), _) => format!("durable (SQLite in {})", dir.display()),
        (None, Some(_)) => "shared with other replicas (Redis)".to_owned(),
        (None, None) => "in memory (set relay.state_dir to survive restarts)".to_owned(),
    };
    info!(
        agent = ?cfg.agent.backend,
        store = %store,
        callback_url = %format!("https://<your domain>{}", cfg.settings.path),
        "agent and store; paste the callback URL into each app's 接收消息 settings"
    );
    let clock = Arc::new(SystemClock);
    let relay = match wecom_relay::start(cfg.settings, cfg.agent, &cfg.runtime, clock).await {
        Ok(relay) => relay,
        Err(e) => {
            error!(error = %e, "cannot open the relay's state (relay.state_dir or relay.redis_url)");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(cfg.runtime.request_timeout_secs);
    http::serve(listener, relay.clone(), timeout, shutdown_signal()).await;
    info!("intake stopped, draining in-flight work");
    relay.platform().jobs().shutdown(drain).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Structured logs through `tracing`, to stderr (the demo has its own, under each step):
/// human-readable text by default, JSON on request; `RUST_LOG` filters (default
/// `info`). The lines are the core's events, which never carry a secret or message text.
///
/// A thread of its own writes them, as many as are waiting in one write: a request or a job
/// formats its line and goes on, instead of making a system call per line (each message is
/// two lines at info level, accepted and answered), or waiting on a slow reader of stderr.
/// Past [`LOG_BUFFER_LINES`] waiting lines, writers wait for room: lines are never dropped.
/// The returned guard writes out what is left when it is dropped.
fn init_logging(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(false)
        .thread_name("wecom-relay-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    guard
}

/// How many log lines may wait for the log thread. Its queue is allocated whole at start
/// (32 bytes a line), so this is kept to what a burst needs rather than the crate's 128,000.
const LOG_BUFFER_LINES: usize = 4096;
