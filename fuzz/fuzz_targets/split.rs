#![no_main]
//! See `wecom_relay_core::fuzz::split_reply`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_relay_core::fuzz::split_reply(data));
