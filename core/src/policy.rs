//! Access policy: who may talk to the agent.
//!
//! Entries are bare user ids (allowed in any corp) or scoped `corp_id:user_id` entries (allowed
//! in that corp only). Matching is case-insensitive, as WeCom's user ids are. `*` or the
//! allow-all switch admits everyone. An empty policy denies everyone, as Hermes does: a relay
//! in front of an agent is closed until its operator opens it.

use alloc::collections::BTreeSet;
use alloc::string::String;

use crate::ids::ScopedUser;

/// The allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    allow_all: bool,
    bare: BTreeSet<String>,
    scoped: BTreeSet<(String, String)>,
}

/// The outcome of [`AccessPolicy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The user may use the agent.
    Allowed,
    /// The user is not on the list.
    Denied,
}

impl AccessPolicy {
    /// Builds a policy from allowlist entries and the allow-all switch. Blank entries are
    /// ignored; `*` means allow all.
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>, allow_all: bool) -> Self {
        let mut policy = Self {
            allow_all,
            ..Self::default()
        };
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                policy.allow_all = true;
            } else if let Some(user) = ScopedUser::parse(entry) {
                policy
                    .scoped
                    .insert((user.corp_id.0.to_lowercase(), user.user_id.0.to_lowercase()));
            } else {
                policy.bare.insert(entry.to_lowercase());
            }
        }
        policy
    }

    /// Parses a comma-separated list (the `WECOM_CALLBACK_ALLOWED_USERS` form).
    pub fn from_csv(csv: &str, allow_all: bool) -> Self {
        Self::new(csv.split(','), allow_all)
    }

    /// Whether the policy admits everyone.
    pub fn allows_all(&self) -> bool {
        self.allow_all
    }

    /// Whether nobody at all is admitted.
    pub fn denies_all(&self) -> bool {
        !self.allow_all && self.bare.is_empty() && self.scoped.is_empty()
    }

    /// Decides for one user.
    pub fn check(&self, user: &ScopedUser) -> Access {
        if self.allow_all {
            return Access::Allowed;
        }
        let uid = user.user_id.0.to_lowercase();
        if self.bare.contains(&uid) || self.scoped.contains(&(user.corp_id.0.to_lowercase(), uid)) {
            Access::Allowed
        } else {
            Access::Denied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn bare_entries_match_any_corp_scoped_only_their_own() {
        let p = AccessPolicy::from_csv(" alice , corpB:Bob,", false);
        assert_eq!(p.check(&ScopedUser::new("corpA", "ALICE")), Access::Allowed);
        assert_eq!(p.check(&ScopedUser::new("corpZ", "alice")), Access::Allowed);
        assert_eq!(p.check(&ScopedUser::new("corpB", "bob")), Access::Allowed);
        assert_eq!(p.check(&ScopedUser::new("corpA", "bob")), Access::Denied);
        assert_eq!(p.check(&ScopedUser::new("CORPB", "BOB")), Access::Allowed);
        assert_eq!(p.check(&ScopedUser::new("corpB", "carol")), Access::Denied);
    }

    #[test]
    fn empty_denies_and_allow_all_admits() {
        let empty = AccessPolicy::from_csv("", false);
        assert!(empty.denies_all());
        assert_eq!(empty.check(&ScopedUser::new("c", "u")), Access::Denied);
        assert_eq!(
            AccessPolicy::from_csv("", true).check(&ScopedUser::new("c", "u")),
            Access::Allowed
        );
        let star = AccessPolicy::from_csv("*", false);
        assert!(star.allows_all());
        assert_eq!(star.check(&ScopedUser::new("c", "u")), Access::Allowed);
    }
}
