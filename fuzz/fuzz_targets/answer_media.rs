#![no_main]
//! See `wecom_relay_core::fuzz::answer_media`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_relay_core::fuzz::answer_media(data));
