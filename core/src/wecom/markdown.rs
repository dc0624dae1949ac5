//! Whether an answer uses markdown, and the same answer without it: `reply_format: auto` sends
//! markdown only when the answer uses it, and `text` sends it with the symbols removed.

use alloc::string::String;

/// Whether the text uses markdown WeCom renders: headings, emphasis, code, links, quotes,
/// lists or tables.
pub fn uses_markdown(text: &str) -> bool {
    let inline = ["**", "__", "`", "](", "~~"];
    text.lines().any(|line| {
        let l = line.trim_start();
        l.starts_with('#') && l.trim_start_matches('#').starts_with(' ')
            || l.starts_with("> ")
            || l.starts_with("- ")
            || l.starts_with("* ")
            || l.starts_with('|') && l.ends_with('|') && l.len() > 2
            || ordered_item(l).is_some()
            || inline.iter().any(|m| l.contains(m))
    })
}

/// `1. ` → the rest of the line.
fn ordered_item(line: &str) -> Option<&str> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && digits < 4)
        .then(|| line[digits..].strip_prefix(". "))
        .flatten()
}

/// The text without markdown's symbols: headings, emphasis and code marks, quote marks,
/// bullets become `•`, links become `text (url)`, fences and table rules go. What the symbols
/// held stays.
pub fn strip_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("```") || is_table_rule(l) {
            continue;
        }
        let indent = &line[..line.len() - l.len()];
        let body = if let Some(rest) = l.strip_prefix('#') {
            rest.trim_start_matches('#').trim_start()
        } else if let Some(rest) = l.strip_prefix("> ") {
            rest
        } else {
            l
        };
        out.push_str(indent);
        if let Some(rest) = body.strip_prefix("- ").or_else(|| body.strip_prefix("* ")) {
            out.push_str("• ");
            inline(rest, &mut out);
        } else if body.starts_with('|') && body.ends_with('|') {
            let cells: alloc::vec::Vec<&str> =
                body.trim_matches('|').split('|').map(str::trim).collect();
            inline(&cells.join("  "), &mut out);
        } else {
            inline(body, &mut out);
        }
        out.push('\n');
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

fn is_table_rule(l: &str) -> bool {
    l.starts_with('|') && l.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Inline marks: `**b**`, `__b__`, `~~s~~`, `` `c` ``, `[t](u)` → `t (u)`, `![a](u)` → `a (u)`.
fn inline(s: &str, out: &mut String) {
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest
            .strip_prefix("**")
            .or_else(|| rest.strip_prefix("__"))
            .or_else(|| rest.strip_prefix("~~"))
        {
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix('`') {
            rest = r;
            continue;
        }
        let link = rest.strip_prefix("![").or_else(|| rest.strip_prefix('['));
        if let Some(after) = link {
            if let Some((label, tail)) = after.split_once("](") {
                if let Some((url, tail)) = tail.split_once(')') {
                    if !label.contains(['[', ']']) && !url.contains(char::is_whitespace) {
                        inline(label, out);
                        out.push_str(" (");
                        out.push_str(url);
                        out.push(')');
                        rest = tail;
                        continue;
                    }
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn plain_answers_are_not_markdown() {
        for plain in [
            "Hello there.",
            "It costs 3 * 4 = 12.",
            "#hashtag and 2# no",
            "a - b",
        ] {
            assert!(!uses_markdown(plain), "{plain}");
        }
        for md in [
            "# Title",
            "**bold**",
            "use `cargo`",
            "see [docs](https://x)",
            "- one\n- two",
            "1. first",
            "| a | b |",
        ] {
            assert!(uses_markdown(md), "{md}");
        }
    }

    #[test]
    fn stripping_keeps_the_words() {
        let md = "## Plan\n\n**Bold** and `code`, see [docs](https://x.example/d).\n- one\n> quoted\n```rust\nlet x = 1;\n```\n| a | b |\n|---|---|\n| 1 | 2 |";
        assert_eq!(
            strip_markdown(md),
            "Plan\n\nBold and code, see docs (https://x.example/d).\n• one\nquoted\nlet x = 1;\na  b\n1  2"
        );
        assert_eq!(strip_markdown("plain 3 * 4"), "plain 3 * 4");
    }
}
