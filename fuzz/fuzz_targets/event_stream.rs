#![no_main]
//! See `wecom_relay_core::fuzz::event_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_relay_core::fuzz::event_stream(data));
