#![no_main]
//! See `wecom_relay_core::fuzz::bot_callback`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_relay_core::fuzz::bot_callback(data));
