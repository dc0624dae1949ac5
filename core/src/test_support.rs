//! Shared fixtures for the unit tests: the official vectors, read as data.

#![allow(dead_code)]

use alloc::string::String;
use alloc::vec::Vec;
use serde::Deserialize;

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/wecom-official.json"
));

#[derive(Deserialize)]
pub struct VectorFile {
    pub sets: Vec<VectorSet>,
}

#[derive(Deserialize)]
pub struct VectorSet {
    pub name: String,
    pub token: String,
    pub encoding_aes_key: String,
    pub corp_id: String,
    pub agent_id: String,
    pub verify_url: VerifyVector,
    pub callback: CallbackVector,
}

#[derive(Deserialize)]
pub struct VerifyVector {
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
    pub echostr: String,
    pub query: String,
    pub expected_body: String,
    pub pad_len: usize,
}

#[derive(Deserialize)]
pub struct CallbackVector {
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
    pub query: String,
    pub body: String,
    pub expected_plaintext: String,
    pub pad_len: usize,
}

pub fn vector_sets() -> Vec<VectorSet> {
    let file: VectorFile = serde_json::from_str(VECTORS).expect("vectors parse");
    assert!(!file.sets.is_empty());
    file.sets
}
