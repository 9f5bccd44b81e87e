//! The key layout shared with the JavaScript adapter:
//! `<prefix><id>` holds the session, `<prefix><lockPrefix><id>` its lock.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    lock_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str, lock_prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            lock_prefix: lock_prefix.to_owned(),
        }
    }

    pub fn session(&self, id: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + id.len());
        k.push_str(&self.prefix);
        k.push_str(id);
        k
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
    fn an_empty_prefix_is_allowed() {
        let k = Keys::new("", "lock:");
        assert_eq!(k.session("abc"), "abc");
        assert_eq!(k.lock("abc"), "lock:abc");
    }
}
