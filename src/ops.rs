//! The store's operations as data: what crosses the boundary for a batch of
//! calls (flat arrays, decoded into [`Op`]s), the Redis commands each op sends,
//! and how each reply becomes an [`Outcome`]. No I/O here.

use napi_derive::napi;
use redis::{Pipeline, Value};

use crate::capabilities::Capabilities;
use crate::errors::{Code, Result, StoreError};
use crate::keys::Keys;
use crate::limits::{script_max_bytes, MAX_PADDING, MAX_TTL_MS};
use crate::splice::not_utf8_message;

/// Operation codes; exported to `store.js` as `OpKind`.
#[napi(js_name = "OpKind")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get = 0,
    Set = 1,
    Delete = 2,
    Merge = 3,
    Lock = 4,
    Unlock = 5,
    IsLocked = 6,
    Touch = 7,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Get,
        Kind::Set,
        Kind::Delete,
        Kind::Merge,
        Kind::Lock,
        Kind::Unlock,
        Kind::IsLocked,
        Kind::Touch,
    ];

    /// The kind whose code (its value in the enum above) is `code`.
    pub fn from_code(code: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == code)
    }

    /// How many strings of the batch's `strings` array the op takes.
    fn strings(self, count: u32) -> usize {
        match self {
            Kind::Set => 1,
            Kind::Merge => count as usize,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub kind: Kind,
    pub id: String,
    pub ttl: f64,
    /// Set: the JSON text. Merge: path, value JSON ("" removes), path, value, …
    pub args: Vec<String>,
}

/// The result of one op.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Bool(bool),
    Text(Option<String>),
    Failed(StoreError),
}

/// How an op settled, as `store.js` reads it; exported as `OutcomeCode`.
#[napi]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeCode {
    Done = 0,
    True = 1,
    False = 2,
    Text = 3,
    Null = 4,
    Failed = 5,
}

/// Decodes a batch: op i has kind `kinds[i]`, id `ids[i]`, ttl `ttls[i]`, and
/// takes its strings in order from `strings` (a merge takes `counts[i]`).
pub fn decode_batch(
    kinds: Vec<u32>,
    ids: Vec<String>,
    ttls: Vec<f64>,
    counts: Vec<u32>,
    strings: Vec<String>,
) -> Result<Vec<Op>> {
    let n = kinds.len();
    if ids.len() != n || ttls.len() != n || counts.len() != n {
        return Err(StoreError::invalid_arg(
            "a batch needs kinds, ids, ttls and counts of one length",
        ));
    }
    let mut strings = strings.into_iter();
    let mut ops = Vec::with_capacity(n);
    for (((kind, id), ttl), count) in kinds.into_iter().zip(ids).zip(ttls).zip(counts) {
        let kind = Kind::from_code(kind)
            .ok_or_else(|| StoreError::invalid_arg(format!("unknown op code {kind}")))?;
        let take = kind.strings(count);
        let args: Vec<String> = strings.by_ref().take(take).collect();
        if args.len() != take || (kind == Kind::Merge && take % 2 != 0) {
            return Err(StoreError::invalid_arg(
                "a batch's strings do not match its ops",
            ));
        }
        ops.push(Op {
            kind,
            id,
            ttl,
            args,
        });
    }
    if strings.next().is_some() {
        return Err(StoreError::invalid_arg(
            "a batch's strings do not match its ops",
        ));
    }
    Ok(ops)
}

/// Encodes one outcome for `store.js`: its code, and its text (or the error
/// as "<CODE>: <message>") where there is one.
pub fn encode_outcome(outcome: Outcome) -> (OutcomeCode, Option<String>) {
    match outcome {
        Outcome::Done => (OutcomeCode::Done, None),
        Outcome::Bool(true) => (OutcomeCode::True, None),
        Outcome::Bool(false) => (OutcomeCode::False, None),
        Outcome::Text(Some(t)) => (OutcomeCode::Text, Some(t)),
        Outcome::Text(None) => (OutcomeCode::Null, None),
        Outcome::Failed(e) => (OutcomeCode::Failed, Some(e.to_string())),
    }
}

/// A ttl in whole ms; the JS layer has checked it, this only refuses what Redis would.
pub fn ttl_ms(ttl: f64) -> Result<u64> {
    if ttl > 0.0 && ttl <= MAX_TTL_MS {
        Ok(ttl.ceil() as u64)
    } else {
        Err(StoreError::invalid_arg(format!(
            "ttlMs must be a number of ms greater than 0 and at most {MAX_TTL_MS}, got {ttl}"
        )))
    }
}

/// Script hashes the commands refer to.
pub struct Shas<'a> {
    pub merge: &'a str,
    pub swap: &'a str,
    pub unlock: &'a str,
}

/// Starts `EVALSHA <sha> 1 <key>`; the script's arguments follow.
pub(crate) fn evalsha<'a>(pipe: &'a mut Pipeline, sha: &str, key: String) -> &'a mut Pipeline {
    pipe.cmd("EVALSHA").arg(sha).arg(1).arg(key)
}

/// A merge's first step: read the stored text, to splice the paths in here.
pub fn push_read(pipe: &mut Pipeline, op: &Op, keys: &Keys) {
    pipe.cmd("GET").arg(keys.session(&op.id));
}

/// A merge's second step: write the spliced text if the stored one is
/// unchanged, the way `capabilities` says.
pub fn push_swap(
    pipe: &mut Pipeline,
    op: &Op,
    keys: &Keys,
    (capabilities, shas): (&Capabilities, &Shas),
    old: &[u8],
    new: &[u8],
) -> Result<()> {
    let ttl = ttl_ms(op.ttl)?;
    capabilities.push_swap(pipe, keys.session(&op.id), old, new, ttl, shas.swap);
    Ok(())
}

/// Appends op's commands to `pipe` (for Merge: the server-side script);
/// returns how many it appended. `token` is the lock token for Lock (the new
/// one) and Unlock (the remembered one).
pub fn push_commands(
    pipe: &mut Pipeline,
    op: &Op,
    keys: &Keys,
    (capabilities, shas): (&Capabilities, &Shas),
    token: Option<&str>,
) -> Result<usize> {
    Ok(match op.kind {
        Kind::Get => {
            pipe.cmd("GET").arg(keys.session(&op.id));
            1
        }
        Kind::Set => {
            let ttl = ttl_ms(op.ttl)?; // before the command goes in: no half-written command
            pipe.cmd("SET")
                .arg(keys.session(&op.id))
                .arg(&op.args[0])
                .arg("PX")
                .arg(ttl);
            1
        }
        Kind::Delete => {
            // The lock first; the session in a second step, only once this
            // succeeded (batch.rs), so a refused DEL (an ACL without the lock
            // keys) leaves the session in place. Single-key commands, each on
            // its own cluster slot.
            pipe.cmd("DEL").arg(keys.lock(&op.id));
            1
        }
        // The merge the server does (`lua/merge.lua`), when the splice here
        // cannot (batch.rs: Step::Script).
        Kind::Merge => {
            let ttl = ttl_ms(op.ttl)?;
            evalsha(pipe, shas.merge, keys.session(&op.id))
                .arg(ttl)
                .arg(script_max_bytes(op.args.len() / 2))
                .arg(MAX_PADDING)
                .arg(&op.args);
            1
        }
        Kind::Lock => {
            let ttl = ttl_ms(op.ttl)?;
            pipe.cmd("SET")
                .arg(keys.lock(&op.id))
                .arg(token.unwrap_or_default())
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            1
        }
        Kind::Unlock => match token {
            Some(token) => {
                capabilities.push_release(pipe, keys.lock(&op.id), token, shas.unlock);
                1
            }
            None => 0,
        },
        Kind::IsLocked => {
            pipe.cmd("EXISTS").arg(keys.lock(&op.id));
            1
        }
        // Only an existing session's expiry moves: PEXPIRE creates nothing.
        Kind::Touch => {
            let ttl = ttl_ms(op.ttl)?;
            pipe.cmd("PEXPIRE").arg(keys.session(&op.id)).arg(ttl);
            1
        }
    })
}

/// A delete's second step, once the lock key is gone: the session.
pub fn push_delete_session(pipe: &mut Pipeline, op: &Op, keys: &Keys) {
    pipe.cmd("DEL").arg(keys.session(&op.id));
}

/// What a reply is, for messages: never its content (session data, tokens).
pub fn describe_reply(v: Option<&Value>) -> &'static str {
    match v {
        None => "no reply",
        Some(Value::Nil) => "nil",
        Some(Value::Int(_)) => "an integer",
        Some(Value::BulkString(_)) => "a bulk string",
        Some(Value::SimpleString(_) | Value::Okay) => "a status",
        Some(Value::Array(_) | Value::Set(_) | Value::Map(_)) => "an aggregate",
        Some(Value::ServerError(_)) => "an error",
        Some(_) => "another type",
    }
}

/// Whether a reply says the script is not in the server's cache.
pub fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// The outcome of op from its replies (one per command it sent; `cluster`:
/// from a cluster client, for an error's code).
pub fn decode_replies(kind: Kind, replies: &[Value], cluster: bool) -> Outcome {
    if let Some(Value::ServerError(e)) = replies.iter().find(|v| matches!(v, Value::ServerError(_)))
    {
        return Outcome::Failed(StoreError::from_reply(e, cluster));
    }
    let reply = replies.first();
    match (kind, reply) {
        (Kind::Get, Some(Value::Nil)) => Outcome::Text(None),
        (Kind::Get, Some(Value::BulkString(bytes))) => match std::str::from_utf8(bytes) {
            Ok(text) => Outcome::Text(Some(text.to_owned())),
            Err(e) => Outcome::Failed(StoreError::new(
                Code::CorruptSession,
                not_utf8_message(e.valid_up_to()),
            )),
        },
        (Kind::Set, Some(Value::Okay)) => Outcome::Done,
        (Kind::Delete, _) | (Kind::Merge, Some(Value::Int(_))) | (Kind::Unlock, _) => Outcome::Done,
        (Kind::Lock, Some(Value::Okay)) => Outcome::Bool(true),
        (Kind::Lock, Some(Value::Nil)) => Outcome::Bool(false),
        (Kind::IsLocked | Kind::Touch, Some(Value::Int(n))) => Outcome::Bool(*n > 0),
        (kind, reply) => Outcome::Failed(StoreError::new(
            Code::Redis,
            format!("unexpected reply to {kind:?}: {}", describe_reply(reply)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn a_batch_decodes_into_ops() {
        let ops = decode_batch(
            vec![0, 1, 3, 4],
            vec![s("a"), s("b"), s("c"), s("d")],
            vec![0.0, 10.0, 20.0, 30.0],
            vec![0, 0, 4, 0],
            vec![s("{}"), s("data.x"), s("1"), s("data.y"), s("")],
        )
        .unwrap();
        assert_eq!(
            ops[0],
            Op {
                kind: Kind::Get,
                id: s("a"),
                ttl: 0.0,
                args: vec![]
            }
        );
        assert_eq!(ops[1].args, vec![s("{}")]);
        assert_eq!(ops[2].args, vec![s("data.x"), s("1"), s("data.y"), s("")]);
        assert_eq!(ops[3].kind, Kind::Lock);
    }

    #[test]
    fn every_kind_decodes_from_its_code() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k as u32), Some(k));
        }
        assert_eq!(Kind::from_code(Kind::ALL.len() as u32), None);
    }

    #[test]
    fn a_malformed_batch_is_refused() {
        let bad = [
            decode_batch(vec![0], vec![], vec![0.0], vec![0], vec![]),
            decode_batch(vec![9], vec![s("a")], vec![0.0], vec![0], vec![]),
            decode_batch(vec![1], vec![s("a")], vec![1.0], vec![0], vec![]),
            decode_batch(vec![3], vec![s("a")], vec![1.0], vec![1], vec![s("p")]),
            decode_batch(vec![0], vec![s("a")], vec![0.0], vec![0], vec![s("extra")]),
        ];
        for b in bad {
            assert_eq!(b.unwrap_err().code, Code::InvalidArg);
        }
    }

    #[test]
    fn outcomes_encode_to_codes_and_texts() {
        let encoded: Vec<_> = vec![
            Outcome::Done,
            Outcome::Bool(true),
            Outcome::Bool(false),
            Outcome::Text(Some(s("{}"))),
            Outcome::Text(None),
            Outcome::Failed(StoreError::closed()),
        ]
        .into_iter()
        .map(encode_outcome)
        .collect();
        let codes: Vec<u32> = encoded.iter().map(|(c, _)| *c as u32).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(encoded[3].1.as_deref(), Some("{}"));
        assert_eq!(
            encoded[5].1.as_deref(),
            Some("ERR_CLOSED: the store is closed")
        );
    }

    #[test]
    fn replies_decode_per_kind() {
        assert_eq!(
            decode_replies(Kind::Get, &[Value::Nil], false),
            Outcome::Text(None)
        );
        assert_eq!(
            decode_replies(Kind::Get, &[Value::BulkString(b"{}".to_vec())], false),
            Outcome::Text(Some(s("{}")))
        );
        assert!(matches!(
            decode_replies(Kind::Get, &[Value::BulkString(vec![0x7b, 0xff])], false),
            Outcome::Failed(StoreError {
                code: Code::CorruptSession,
                ..
            })
        ));
        assert_eq!(
            decode_replies(Kind::Lock, &[Value::Okay], false),
            Outcome::Bool(true)
        );
        assert_eq!(
            decode_replies(Kind::Lock, &[Value::Nil], false),
            Outcome::Bool(false)
        );
        assert_eq!(
            decode_replies(Kind::IsLocked, &[Value::Int(1)], false),
            Outcome::Bool(true)
        );
        assert_eq!(
            decode_replies(Kind::Delete, &[Value::Int(1), Value::Int(0)], false),
            Outcome::Done
        );
        assert!(matches!(
            decode_replies(Kind::Set, &[Value::Int(3)], false),
            Outcome::Failed(_)
        ));
        // An unexpected reply is described, never quoted.
        match decode_replies(
            Kind::Set,
            &[Value::BulkString(b"secret-data".to_vec())],
            false,
        ) {
            Outcome::Failed(e) => assert!(!e.message.contains("secret"), "{}", e.message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ttl_rounds_up_and_refuses_what_redis_would() {
        assert_eq!(ttl_ms(1.0).unwrap(), 1);
        assert_eq!(ttl_ms(0.2).unwrap(), 1);
        assert_eq!(ttl_ms(5000.5).unwrap(), 5001);
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(ttl_ms(bad).unwrap_err().code, Code::InvalidArg);
        }
    }
}
