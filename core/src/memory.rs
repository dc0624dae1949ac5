//! Conversation memory: the turns a user and the agent exchanged, and the bounds that keep them
//! small. Where they are stored is a port ([`crate::ports::ConversationStore`]).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The WeCom user.
    User,
    /// The agent.
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
}

/// Bounds on a stored conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many turns are kept.
    pub max_turns: usize,
    /// At most this many bytes of text are kept.
    pub max_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_turns: 20,
            max_bytes: 32 * 1024,
        }
    }
}

/// Drops the oldest turns until `turns` fits `limits`. Every store applies this on append.
pub fn trim_history(turns: &mut Vec<Turn>, limits: HistoryLimits) {
    let mut bytes: usize = turns.iter().map(|t| t.text.len()).sum();
    let mut drop = 0;
    while drop < turns.len() && (turns.len() - drop > limits.max_turns || bytes > limits.max_bytes)
    {
        bytes -= turns[drop].text.len();
        drop += 1;
    }
    turns.drain(..drop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn trim_keeps_the_newest() {
        let mut turns: Vec<Turn> = (0..10)
            .map(|i| Turn {
                role: Role::User,
                text: i.to_string(),
            })
            .collect();
        trim_history(
            &mut turns,
            HistoryLimits {
                max_turns: 4,
                max_bytes: 100,
            },
        );
        assert_eq!(turns.first().unwrap().text, "6");
        trim_history(
            &mut turns,
            HistoryLimits {
                max_turns: 4,
                max_bytes: 0,
            },
        );
        assert!(turns.is_empty());
    }
}
