//! Structured logs through `tracing`: human-readable text by default, JSON on request.
//! `RUST_LOG` filters (default `info`). Secrets, tokens and message bodies are never logged at
//! info: the core's types redact them, and handlers log ids and outcomes only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. Safe to call more than once (later calls
/// are ignored).
pub fn init(format: &str) {
    init_to(format, false);
}

/// Like [`init`], to stdout when `stdout` is set (the demo interleaves logs with its steps).
pub fn init_to(format: &str, stdout: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = if stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || -> Box<dyn std::io::Write> {
            if stdout {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::stderr())
            }
        });
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
