//! `wecom-relay`: the self-hosted twin. The server arrives with its own issue; this binary
//! already links the core so the workspace builds end to end.

fn main() {
    println!(
        "wecom-relay {} (core ready; server not built yet)",
        env!("CARGO_PKG_VERSION")
    );
}
