//! Checking bytes as UTF-8 text: every callback's body and decrypted message passes here.

/// `bytes` as `&str` if they are UTF-8. With `std`, SIMD is chosen at run time where the
/// CPU has it (several times std's speed on Chinese text); without, the portable check.
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
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
}
