//! The Lua scripts the store runs on the server, and their one owner: their
//! sources (compiled in from `lua/`, their bytes and so their SHA1s fixed),
//! how a command calls one (`EVALSHA` by SHA1), how a reply says the server
//! has lost them (NOSCRIPT, after a restart or `SCRIPT FLUSH`), and loading
//! them (`SCRIPT LOAD`, by `preloadScript` and after NOSCRIPT).

use redis::{Pipeline, Script, Value};

/// The merge the server does when the splice here cannot (after a conflict).
pub const MERGE_LUA: &str = include_str!("../../lua/merge.lua");
/// Compare-and-set of a session merged on the client.
pub const COMPARE_AND_SET_LUA: &str = include_str!("../../lua/swap.lua");
/// Compare-and-delete of a lock key.
pub const UNLOCK_LUA: &str = include_str!("../../lua/unlock.lua");
/// A user's index of session ids (`userIdPath`): add an entry, prune.
pub const USERS_LUA: &str = include_str!("../../lua/users.lua");

/// The scripts, with their SHA1s computed once.
pub struct Scripts {
    merge: Script,
    compare_and_set: Script,
    unlock: Script,
    users: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            merge: Script::new(MERGE_LUA),
            compare_and_set: Script::new(COMPARE_AND_SET_LUA),
            unlock: Script::new(UNLOCK_LUA),
            users: Script::new(USERS_LUA),
        }
    }
}

impl Scripts {
    /// SHA1 of `lua/merge.lua`.
    pub fn merge(&self) -> &str {
        self.merge.get_hash()
    }

    /// SHA1 of `lua/swap.lua`, the compare-and-set.
    pub fn compare_and_set(&self) -> &str {
        self.compare_and_set.get_hash()
    }

    /// SHA1 of `lua/unlock.lua`, the compare-and-delete of a lock.
    pub fn unlock(&self) -> &str {
        self.unlock.get_hash()
    }

    /// SHA1 of `lua/users.lua`, a user's index.
    pub fn users(&self) -> &str {
        self.users.get_hash()
    }

    /// `SCRIPT LOAD` of every script, as one pipeline; any error reply in
    /// its answer means the scripts are not loaded.
    pub fn load(&self) -> Pipeline {
        let mut pipe = redis::pipe();
        for lua in [MERGE_LUA, COMPARE_AND_SET_LUA, UNLOCK_LUA, USERS_LUA] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(lua);
        }
        pipe
    }
}

/// Starts `EVALSHA <sha> 1 <key>`; the script's arguments follow.
pub fn evalsha<'a>(pipe: &'a mut Pipeline, sha: &str, key: String) -> &'a mut Pipeline {
    pipe.cmd("EVALSHA").arg(sha).arg(1).arg(key)
}

/// Whether a reply says the script is not in the server's cache.
pub fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_pass_keys_only_through_keys() {
        // Cluster routing needs every key in KEYS; the scripts never build one.
        for lua in [MERGE_LUA, COMPARE_AND_SET_LUA, UNLOCK_LUA, USERS_LUA] {
            assert!(lua.contains("KEYS[1]"));
            assert!(!lua.contains("KEYS[2]"));
        }
    }
}
