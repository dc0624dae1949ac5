//! Checking text: every callback's body and decrypted message passes here as UTF-8, and
//! every id field is checked for control characters.

/// `bytes` as `&str` if they are UTF-8. With `std`, SIMD is chosen at run time where the
/// CPU has it (several times std's speed on Chinese text); without, the portable check.
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

/// Whether `s` holds a control character (`char::is_control`: U+0000 to U+001F and U+007F
/// to U+009F), read from its bytes: the C1 controls are `C2 80` to `C2 9F` in UTF-8.
pub(crate) fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    // Visible ASCII, as ids nearly always are, has none: one pass without a branch per
    // byte (the compiler makes it a vector loop) settles it.
    if !b
        .iter()
        .fold(false, |odd, &c| odd | !(0x20..0x7f).contains(&c))
    {
        return false;
    }
    b.iter().enumerate().any(|(i, &c)| {
        c < 0x20 || c == 0x7f || (c == 0xc2 && matches!(b.get(i + 1), Some(0x80..=0x9f)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn agrees_with_std() {
        let cases: [&[u8]; 8] = [
            b"",
            b"<xml>hello</xml>",
            "你好，世界 😀 ]]>".as_bytes(),
            b"\xff",
            b"abc\xe4\xbd",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
        ];
        for bytes in cases {
            assert_eq!(utf8(bytes), core::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
        let long = "企业微信 relay ".repeat(200);
        assert_eq!(utf8(long.as_bytes()), Some(long.as_str()));
        let mut broken = long.into_bytes();
        broken[1001] = 0xff;
        assert_eq!(utf8(&broken), None);
    }

    #[test]
    fn control_characters_are_found_by_their_bytes() {
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let s = alloc::format!("a{}b", c.encode_utf8(&mut buf));
            assert_eq!(has_control(&s), c.is_control(), "{c:?}");
        }
    }
}
