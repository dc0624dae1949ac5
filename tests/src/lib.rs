//! The behaviour suite of wecom-relay: real peers and the scenarios both twins must pass.
//!
//! - [`peer::WechatpyPeer`] drives wechatpy from PyPI, the reference Python implementation of
//!   WXBizMsgCrypt, as the WeCom side: it encrypts callbacks and decrypts replies.
//!
//! The Python environment is prepared by `scripts/test.sh` (a venv at `.venv/`); set
//! `WECOM_RELAY_PYTHON` to use another interpreter that has `wechatpy[cryptography]==1.8.18`.

pub mod harness;
pub mod peer;
pub mod webhook;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}
