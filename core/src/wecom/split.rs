//! Reply splitting: long answers become several messages of at most 2048 UTF-8 bytes each.
//!
//! WeCom truncates `text` and `markdown` content past 2048 bytes; the Hermes adapter cut there
//! silently. Here nothing is lost or repeated: the bodies of the parts, joined, give back the
//! input exactly. A part is never split inside a character. Breaks are chosen, in order of
//! preference, before a code block that would not fit, then at a paragraph, a line, a sentence
//! (`。！？.!?`), a word, and only then anywhere.
//!
//! A fenced code block that must be split is closed at the end of one part and reopened (with
//! its info string) at the start of the next; those fences are the only bytes added, and they
//! live in [`Part::prefix`] and [`Part::suffix`], outside the body.

use alloc::string::String;
use alloc::vec::Vec;

use crate::wecom::api::MAX_TEXT_BYTES;

/// The smallest limit that leaves room for fences and at least one character.
pub const MIN_PART_BYTES: usize = 32;

/// One part of a split reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// A reopened code fence, or empty.
    pub prefix: String,
    /// A slice of the input.
    pub body: &'a str,
    /// A closing code fence, or empty.
    pub suffix: &'static str,
}

impl Part<'_> {
    /// The text to send.
    pub fn render(&self) -> String {
        let mut out =
            String::with_capacity(self.prefix.len() + self.body.len() + self.suffix.len());
        out.push_str(&self.prefix);
        out.push_str(self.body);
        out.push_str(self.suffix);
        out
    }
}

/// Splits for WeCom's 2048-byte limit.
pub fn split_for_wecom(text: &str) -> Vec<String> {
    split(text, MAX_TEXT_BYTES)
        .iter()
        .map(Part::render)
        .collect()
}

/// Splits `text` into parts whose rendered size is at most `max_bytes` (at least
/// [`MIN_PART_BYTES`]). Empty input gives no parts.
pub fn split(text: &str, max_bytes: usize) -> Vec<Part<'_>> {
    let max = max_bytes.max(MIN_PART_BYTES);
    let mut parts = Vec::new();
    let mut start = 0;
    let mut fence: Option<&str> = None;
    while start < text.len() {
        let prefix = match fence {
            Some(open) if open.len() < max / 4 => {
                let mut p = String::from(open);
                p.push('\n');
                p
            }
            Some(_) => String::from("```\n"),
            None => String::new(),
        };
        let rest = &text[start..];
        if prefix.len() + rest.len() <= max {
            parts.push(Part {
                prefix,
                body: rest,
                suffix: "",
            });
            break;
        }
        // Try the whole room first; if the part ends inside a code block, leave room for the
        // closing "\n```" and choose again.
        let mut budget = max - prefix.len();
        let (cut, after) = loop {
            let window_end = floor_boundary(text, start + budget);
            let cut = best_break(text, start, window_end, fence.is_some());
            let after = fence_state(&text[start..cut], fence);
            if after.is_none() || budget < max - prefix.len() {
                break (cut, after);
            }
            budget -= 4;
        };
        let body = &text[start..cut];
        let suffix = match after {
            Some(_) if body.ends_with('\n') => "```",
            Some(_) => "\n```",
            None => "",
        };
        parts.push(Part {
            prefix,
            body,
            suffix,
        });
        fence = after;
        start = cut;
    }
    parts
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// If the line is a code fence (up to three spaces, then three backticks), its trimmed text.
fn fence_line(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let trimmed = line.trim();
    (indent <= 3 && trimmed.starts_with("```")).then_some(trimmed)
}

/// The open fence after `body`, given the open fence before it.
fn fence_state<'a>(body: &'a str, mut fence: Option<&'a str>) -> Option<&'a str> {
    for line in body.split_inclusive('\n') {
        if let Some(f) = fence_line(line) {
            fence = match fence {
                None => Some(f),
                Some(_) => None,
            };
        }
    }
    fence
}

/// The end (exclusive) of the best first part of `text[start..window_end]`.
fn best_break(text: &str, start: usize, window_end: usize, in_fence: bool) -> usize {
    let window = &text[start..window_end];
    let min_keep = window.len() / 4;
    let ok = |i: usize| i > min_keep;

    // Before a code block that opens here and does not close within the window.
    if !in_fence {
        let mut fence: Option<usize> = None;
        let mut offset = 0;
        for line in window.split_inclusive('\n') {
            if fence_line(line).is_some() && line.ends_with('\n') {
                fence = match fence {
                    None => Some(offset),
                    Some(_) => None,
                };
            }
            offset += line.len();
        }
        if let Some(open_at) = fence {
            if ok(open_at) {
                return start + open_at;
            }
        }
    }
    // A paragraph, then a line.
    if let Some(i) = window.rfind("\n\n").map(|i| i + 2).filter(|&i| ok(i)) {
        return start + i;
    }
    if let Some(i) = window.rfind('\n').map(|i| i + 1).filter(|&i| ok(i)) {
        return start + i;
    }
    // A sentence: CJK terminators anywhere, ASCII ones before whitespace.
    let mut sentence = None;
    let mut chars = window.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        match c {
            '。' | '！' | '？' => sentence = Some(end),
            '.' | '!' | '?' => {
                if let Some(&(_, next)) = chars.peek() {
                    if next.is_whitespace() {
                        sentence = Some(end + next.len_utf8());
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(i) = sentence.filter(|&i| ok(i) && i <= window.len()) {
        return start + i;
    }
    // A word.
    if let Some((i, c)) = window.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
        let i = i + c.len_utf8();
        if ok(i) {
            return start + i;
        }
    }
    // Anywhere, on a character boundary; always progress by at least one character.
    if window_end > start {
        window_end
    } else {
        start + text[start..].chars().next().map_or(1, char::len_utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    use alloc::format;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn joined(parts: &[Part<'_>]) -> String {
        parts.iter().map(|p| p.body).collect()
    }

    fn check(text: &str, max: usize) -> Vec<String> {
        let parts = split(text, max);
        assert_eq!(joined(&parts), text);
        for p in &parts {
            assert!(
                p.render().len() <= max,
                "part of {} bytes > {max}",
                p.render().len()
            );
            assert!(!p.body.is_empty());
        }
        parts.iter().map(Part::render).collect()
    }

    #[test]
    fn short_text_is_one_part_and_empty_is_none() {
        assert_eq!(check("hello", 2048), vec!["hello"]);
        assert!(split("", 2048).is_empty());
        let exact = "a".repeat(2048);
        assert_eq!(check(&exact, 2048).len(), 1);
        assert_eq!(check(&"a".repeat(2049), 2048).len(), 2);
    }

    #[test]
    fn prefers_paragraphs_then_lines_then_sentences_then_words() {
        let para = format!("{}\n\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(check(&para, 100)[0], format!("{}\n\n", "a".repeat(60)));
        let lines = format!("{}\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(check(&lines, 100)[0], format!("{}\n", "a".repeat(60)));
        let cjk = format!("{}。{}", "中".repeat(20), "文".repeat(20));
        assert_eq!(check(&cjk, 100)[0], format!("{}。", "中".repeat(20)));
        let en = format!("{}. {}", "a".repeat(50), "b".repeat(60));
        assert_eq!(check(&en, 100)[0], format!("{}. ", "a".repeat(50)));
        let pi = format!("{} 3.14{}", "a".repeat(50), "b".repeat(60));
        assert_eq!(check(&pi, 100)[0], format!("{} ", "a".repeat(50)));
        let words = "word ".repeat(40);
        assert!(check(&words, 100).iter().all(|p| p.ends_with(' ')));
    }

    #[test]
    fn never_splits_a_character() {
        let text = "😀".repeat(1000); // 4 bytes each
        let parts = check(&text, 2049);
        assert_eq!(parts[0].len(), 2048);
        let text = "中".repeat(1000);
        assert!(check(&text, 2048).iter().all(|p| p.len() % 3 == 0));
    }

    #[test]
    fn code_blocks_move_whole_or_close_and_reopen() {
        let text = format!(
            "{}\n```rust\n{}```\nafter",
            "intro ".repeat(12),
            "let x = 1;\n".repeat(5)
        );
        let parts = check(&text, 120);
        assert!(parts[1].starts_with("```rust\n"), "{parts:?}");
        let long_code = format!("```py\n{}```\n", "print('hello')\n".repeat(30));
        let parts = split(&long_code, 200);
        assert!(parts.len() > 2);
        for (i, p) in parts.iter().enumerate() {
            let r = p.render();
            assert!(r.starts_with("```py\n"), "part {i} does not reopen: {r:?}");
            assert!(
                r.trim_end().ends_with("```"),
                "part {i} does not close: {r:?}"
            );
            if i > 0 {
                assert_eq!(p.prefix, "```py\n");
            }
        }
        assert_eq!(joined(&parts), long_code);
    }

    #[test]
    fn a_3000_byte_reply_is_two_parts_with_nothing_lost() {
        let text = "这是一个很长的回答。".repeat(100); // 3000 bytes
        let parts = split_for_wecom(&text);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= 2048));
        assert_eq!(parts.concat(), text);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;

    fn pieces() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("\n".to_string()),
            Just("\n\n".to_string()),
            Just("```".to_string()),
            Just("```rust\n".to_string()),
            Just("。".to_string()),
            Just(". ".to_string()),
            Just(" ".to_string()),
            Just("😀".to_string()),
            "[a-z]{1,40}",
            "[\u{4e00}-\u{4e50}]{1,20}",
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(atom, 0..400).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parts_fit_and_join_back(text in pieces(), max in 32usize..600) {
            let parts = split(&text, max);
            prop_assert_eq!(parts.iter().map(|p| p.body).collect::<String>(), text.clone());
            for p in &parts {
                prop_assert!(p.render().len() <= max);
                prop_assert!(!p.body.is_empty());
            }
            // No needlessly small parts: every part but the last carries a fair share.
            for p in parts.iter().rev().skip(1) {
                prop_assert!(p.body.len() >= (max * 3 / 4 - 8) / 4, "tiny part of {} bytes", p.body.len());
            }
        }
    }
}
