//! The key layout shared with the JavaScript adapter:
//! `<prefix><id>` holds the session, `<prefix><lockPrefix><id>` its lock.
//! With `userIdPath`, `<prefix><userPrefix><userId>` is a user's index of
//! session ids (`users.rs`). Neither sub-prefix starts the other
//! (`addon/options.rs`) and no session id starts with either (`lib/args.js`),
//! so no two kinds of key can be the same key.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    lock_prefix: String,
    /// With `userIdPath` only.
    user_prefix: Option<String>,
}

impl Keys {
    pub fn new(prefix: &str, lock_prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            lock_prefix: lock_prefix.to_owned(),
            user_prefix: None,
        }
    }

    /// The layout with users' index keys under `user_prefix`.
    pub fn with_users(mut self, user_prefix: &str) -> Self {
        self.user_prefix = Some(user_prefix.to_owned());
        self
    }

    /// What index keys put after the prefix, when the store keeps them.
    pub fn user_prefix(&self) -> Option<&str> {
        self.user_prefix.as_deref()
    }

    /// The key of `user`'s index of session ids.
    pub fn user_index(&self, user: &str) -> String {
        let sub = self.user_prefix.as_deref().unwrap_or_default();
        let mut k = String::with_capacity(self.prefix.len() + sub.len() + user.len());
        k.push_str(&self.prefix);
        k.push_str(sub);
        k.push_str(user);
        k
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn lock_prefix(&self) -> &str {
        &self.lock_prefix
    }

    pub fn session(&self, id: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + id.len());
        k.push_str(&self.prefix);
        k.push_str(id);
        k
    }

    /// The `SCAN MATCH` pattern of every key under the prefix (sessions and
    /// locks), the prefix's glob characters escaped so they match themselves.
    pub fn pattern(&self) -> String {
        let mut p = String::with_capacity(self.prefix.len() * 2 + 1);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push('*');
        p
    }

    /// The session id a key holds; None for a lock key, a user's index
    /// key, or a key outside the prefix.
    pub fn id_of<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        if rest.starts_with(self.lock_prefix.as_bytes()) {
            return None;
        }
        if let Some(user_prefix) = &self.user_prefix {
            if rest.starts_with(user_prefix.as_bytes()) {
                return None;
            }
        }
        std::str::from_utf8(rest).ok().filter(|id| !id.is_empty())
    }

    /// The user whose index a key is; None for any other key, or without
    /// `userIdPath`.
    pub fn user_of_index<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let user = rest.strip_prefix(self.user_prefix.as_deref()?.as_bytes())?;
        std::str::from_utf8(user).ok().filter(|u| !u.is_empty())
    }

    pub fn lock(&self, id: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + self.lock_prefix.len() + id.len());
        k.push_str(&self.prefix);
        k.push_str(&self.lock_prefix);
        k.push_str(id);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_js_adapter() {
        let k = Keys::new("sess:", "lock:");
        assert_eq!(k.session("abc"), "sess:abc");
        assert_eq!(k.lock("abc"), "sess:lock:abc");
    }

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(Keys::new("sess:", "lock:").pattern(), "sess:*");
        assert_eq!(
            Keys::new("a*b?[c]\\:", "l:").pattern(),
            "a\\*b\\?\\[c\\]\\\\:*"
        );
        assert_eq!(Keys::new("", "l:").pattern(), "*");
    }

    #[test]
    fn ids_leave_out_locks_and_other_keys() {
        let k = Keys::new("sess:", "lock:");
        assert_eq!(k.id_of(b"sess:abc"), Some("abc"));
        assert_eq!(k.id_of(b"sess:lock:abc"), None);
        assert_eq!(k.id_of(b"other:abc"), None);
        assert_eq!(k.id_of(b"sess:"), None);
        assert_eq!(k.id_of(&[b's', b'e', b's', b's', b':', 0xff]), None);
    }

    #[test]
    fn index_keys_are_not_sessions() {
        let k = Keys::new("sess:", "lock:").with_users("user:");
        assert_eq!(k.user_index("42"), "sess:user:42");
        assert_eq!(k.id_of(b"sess:user:42"), None);
        assert_eq!(k.user_of_index(b"sess:user:42"), Some("42"));
        assert_eq!(k.user_of_index(b"sess:abc"), None);
        assert_eq!(
            Keys::new("sess:", "lock:").user_of_index(b"sess:user:42"),
            None
        );
        assert_eq!(k.id_of(b"sess:abc"), Some("abc"));
        assert_eq!(
            Keys::new("sess:", "lock:").id_of(b"sess:user:42"),
            Some("user:42")
        );
    }

    #[test]
    fn an_empty_prefix_is_allowed() {
        let k = Keys::new("", "lock:");
        assert_eq!(k.session("abc"), "abc");
        assert_eq!(k.lock("abc"), "lock:abc");
    }
}
