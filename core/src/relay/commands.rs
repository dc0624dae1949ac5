//! What the relay says by itself: the commands it answers without the agent, and the fixed
//! texts (thinking notice, apology) it sends on the agent's behalf.

/// Sent once when the agent is slow.
pub const THINKING_TEXT: &str = "正在思考，请稍候…（Thinking, one moment…）";
/// Sent when the agent failed for good.
pub const APOLOGY_TEXT: &str = "抱歉，暂时无法回答，请稍后再试。（Sorry, I couldn't answer just now. Please try again in a moment.）";
/// The answer to `/reset` and `/new`.
pub const RESET_TEXT: &str = "已开始新的对话。（Started a new conversation.）";
/// The answer to `/help`.
pub const HELP_TEXT: &str = "可用命令 / Commands:\n/new 或 /reset — 清空对话记忆，开始新的对话 (forget this conversation)\n/help — 显示本帮助 (show this help)";

/// A command the relay answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `/reset` or `/new`.
    Reset,
    /// `/help`.
    Help,
}

/// Recognises a command: the whole message, case-insensitive, surrounding spaces ignored.
pub fn parse_command(text: &str) -> Option<Command> {
    match text.trim().to_ascii_lowercase().as_str() {
        "/reset" | "/new" => Some(Command::Reset),
        "/help" => Some(Command::Help),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn commands_are_the_whole_message_in_any_case() {
        assert_eq!(parse_command(" /NEW "), Some(Command::Reset));
        assert_eq!(parse_command("/reset"), Some(Command::Reset));
        assert_eq!(parse_command("/Help"), Some(Command::Help));
        assert_eq!(parse_command("/new please"), None);
        assert_eq!(parse_command("say /help"), None);
    }
}
