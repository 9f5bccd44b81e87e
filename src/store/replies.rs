//! What Redis's replies mean: the [`Outcome`] of an op from the replies to
//! its commands, and a reply described for a message without quoting it
//! (replies hold session data and lock tokens).

use redis::Value;

use crate::errors::{Code, StoreError};
use crate::merge::splice::not_utf8_message;
use crate::store::ops::{Kind, Outcome};

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
    use crate::errors::Code;

    fn s(v: &str) -> String {
        v.to_owned()
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
        for kind in [Kind::IsLocked, Kind::Touch] {
            for (n, found) in [(0, false), (1, true)] {
                assert_eq!(
                    decode_replies(kind, &[Value::Int(n)], false),
                    Outcome::Bool(found)
                );
            }
        }
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
            Outcome::Failed(e) => {
                assert_eq!(e.code, Code::Redis);
                assert_eq!(e.message, "unexpected reply to Set: a bulk string");
            }
            other => panic!("{other:?}"),
        }
        let described: Vec<&str> = [
            None,
            Some(Value::Nil),
            Some(Value::Int(1)),
            Some(Value::Okay),
            Some(Value::Array(vec![])),
            Some(Value::Boolean(true)),
        ]
        .iter()
        .map(|v| describe_reply(v.as_ref()))
        .collect();
        assert_eq!(
            described,
            [
                "no reply",
                "nil",
                "an integer",
                "a status",
                "an aggregate",
                "another type"
            ]
        );
    }
}
