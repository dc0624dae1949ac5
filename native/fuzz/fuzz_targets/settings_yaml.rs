#![no_main]
//! See `wecom_relay::fuzz::settings_yaml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wecom_relay::fuzz::settings_yaml(data));
