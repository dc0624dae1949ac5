//! Identifiers and secrets as newtypes. Secrets never print: their `Debug` is redacted and they
//! have no `Display`.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }
    };
}

id_newtype!(
    /// A WeCom CorpID, e.g. `ww1436e0e65a779aee`.
    CorpId
);
id_newtype!(
    /// A WeCom UserID inside one corp. WeCom treats user ids case-insensitively.
    UserId
);
id_newtype!(
    /// A message id (`MsgId`).
    MsgId
);

/// A self-built app's AgentId: always numeric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub u64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps the secret.
            pub fn new(secret: impl Into<String>) -> Self {
                Self(secret.into())
            }

            /// The secret itself, for the one place that must send it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_newtype!(
    /// An app's secret (`corpsecret`).
    CorpSecret
);
secret_newtype!(
    /// An access token from `gettoken`.
    AccessToken
);
secret_newtype!(
    /// A credential of ours: the `/api/send` bearer token, an agent API key, a webhook secret.
    ApiToken
);

/// A user scoped by corp: `corp_id:user_id`. The same UserID in two corps is two people.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScopedUser {
    /// The corp.
    pub corp_id: CorpId,
    /// The user inside it.
    pub user_id: UserId,
}

impl ScopedUser {
    /// Builds the scoped id.
    pub fn new(corp_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self {
            corp_id: CorpId(corp_id.into()),
            user_id: UserId(user_id.into()),
        }
    }

    /// Parses `corp_id:user_id`. CorpIDs contain no colon, so the first colon splits.
    pub fn parse(s: &str) -> Option<Self> {
        let (corp, user) = s.trim().split_once(':')?;
        if corp.is_empty() || user.is_empty() {
            return None;
        }
        Some(Self::new(corp, user))
    }

    /// A stable key for stores (conversation, ordering): the corp plus the lower-cased user id,
    /// since WeCom user ids are case-insensitive.
    pub fn key(&self) -> String {
        let mut key = String::with_capacity(self.corp_id.0.len() + self.user_id.0.len() + 1);
        key.push_str(&self.corp_id.0);
        key.push(':');
        key.push_str(&self.user_id.0.to_lowercase());
        key
    }
}

impl fmt::Display for ScopedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.corp_id, self.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    use alloc::format;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn scoped_user_parses_and_prints() {
        let u = ScopedUser::parse("ww1:Alice").unwrap();
        assert_eq!(u.corp_id.as_str(), "ww1");
        assert_eq!(u.user_id.as_str(), "Alice");
        assert_eq!(format!("{u}"), "ww1:Alice");
        assert_eq!(u.key(), "ww1:alice");
        assert_eq!(
            ScopedUser::parse("ww1:a:b").unwrap().user_id.as_str(),
            "a:b"
        );
        assert!(ScopedUser::parse("nocolon").is_none());
        assert!(ScopedUser::parse(":x").is_none());
        assert!(ScopedUser::parse("x:").is_none());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = CorpSecret::new("hunter2");
        assert_eq!(format!("{s:?}"), "CorpSecret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{:?}", AccessToken::new("tok")).contains("tok)"));
    }
}
