#![no_main]
//! See `wecom_relay_core::fuzz::stream_layout`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_relay_core::fuzz::stream_layout(data));
