//! Fuzzes the client-side merge (src/splice.rs) and its scanner.
//!
//! The first byte picks a mode:
//! - raw: arbitrary bytes as the stored text and arbitrary (path, value)
//!   pairs. No panic, no crash; the scanner's verdict on the text agrees with
//!   serde_json's (up to what serde_json refuses and JSON allows: lone
//!   surrogate escapes, nesting past its recursion limit).
//! - structured: a generated JSON object, written compactly or pretty, and
//!   generated paths and values. The merged text parses, and equals what the
//!   README's merge semantics give when applied to the parsed document
//!   (`expected` below, written from the README, not from the splice); a
//!   padding past MAX_PADDING is refused exactly when the semantics say so.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use relay_session_redis::limits::MAX_PADDING;
use relay_session_redis::merge::splice::{self, SpliceError};
use serde_json::{Map, Number, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    if mode % 2 == 0 {
        let _ = raw(&mut u);
    } else {
        let _ = structured(&mut u);
    }
});

fn raw(u: &mut Unstructured) -> Result<()> {
    let len = u.int_in_range(0..=u.len())?;
    let stored = u.bytes(len)?.to_vec();
    let mut pairs = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        pairs.push(u.arbitrary::<String>()?);
        pairs.push(u.arbitrary::<String>()?);
    }
    let ours = splice::validate(&stored);
    let theirs = serde_json::from_slice::<Value>(&stored);
    match (&ours, &theirs) {
        (Ok(()), Ok(v)) => assert!(v.is_object(), "accepted a text whose root is not an object"),
        (Ok(()), Err(e)) => {
            let e = e.to_string();
            assert!(
                e.contains("surrogate") || e.contains("recursion limit"),
                "accepted a text serde_json refuses: {e}"
            );
        }
        (Err(SpliceError::Corrupt(_)), Ok(v)) => {
            assert!(!v.is_object(), "refused a JSON object")
        }
        (Err(SpliceError::Corrupt(_)), Err(_)) => {}
        (Err(other), _) => panic!("validate gave {other:?}"),
    }
    // Any pairs, even values that are not JSON: no panic, and a refusal only
    // for the reasons the splice has.
    match splice::merge(&stored, &pairs) {
        Ok(_) => assert!(ours.is_ok()),
        Err(SpliceError::Corrupt(_)) => assert!(ours.is_err()),
        Err(SpliceError::BadArg(_)) => {}
        Err(SpliceError::OutOfTime) => panic!("out of time without a deadline"),
    }
    Ok(())
}

/// Keys and segments drawn from one pool, so paths meet existing keys.
const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "0",
    "1",
    "2",
    "10",
    "length",
    "01",
    "é",
    "q\"\\",
    "",
    "a b",
    "😀",
    "\n",
    "/",
    "\u{7f}",
    "4294967295",
    "100001",
];

fn key(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 8)? {
        let s: String = u.arbitrary()?;
        // With arbitrary_precision, serde_json reads an object holding its
        // private number token as a number: the oracle's quirk, not JSON's.
        if !s.contains("$serde_json") {
            return Ok(s.replace('.', ""));
        }
    }
    Ok(u.choose(KEYS)?.to_string())
}

fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let top = if depth >= 4 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(Number::from(u.arbitrary::<i64>()?)),
        3 => {
            let f: f64 = u.arbitrary()?;
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        4 => Value::String(key(u)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| value(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth + 1)?),
    })
}

fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        m.insert(key(u)?, value(u, depth)?);
    }
    Ok(m)
}

fn structured(u: &mut Unstructured) -> Result<()> {
    let doc = Value::Object(object(u, 0)?);
    let text = if u.arbitrary()? {
        serde_json::to_string_pretty(&doc)
    } else {
        serde_json::to_string(&doc)
    }
    .unwrap();
    let mut pairs = Vec::new();
    let mut paths = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let segs = (0..u.int_in_range(1..=5)?)
            .map(|_| key(u))
            .collect::<Result<Vec<_>>>()?;
        let val = if u.ratio(1, 4)? {
            None
        } else {
            Some(value(u, 2)?)
        };
        pairs.push(segs.join("."));
        pairs.push(val.as_ref().map_or(String::new(), |v| v.to_string()));
        paths.push((segs, val));
    }
    let mut want = doc.clone();
    let mut budget = u64::from(MAX_PADDING);
    let refused = paths
        .iter()
        .try_for_each(|(segs, val)| expected(&mut want, segs, val.clone(), &mut budget));
    match (splice::merge(text.as_bytes(), &pairs), refused) {
        (Ok(out), Ok(())) => {
            let got: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!(
                    "the merge wrote text that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&out)
                )
            });
            assert_eq!(got, want, "stored {text}\npaths {pairs:?}");
            // The store skips the check of a text it spliced: the output
            // must pass it, and a checked splice must match the full one.
            assert_eq!(
                splice::validate(&out),
                Ok(()),
                "stored {text}\npaths {pairs:?}"
            );
            assert_eq!(
                splice::merge_checked(text.as_bytes(), &pairs, None).as_deref(),
                Ok(&out[..])
            );
        }
        (Err(SpliceError::BadArg(_)), Err(())) => {}
        (got, want) => {
            panic!("merge gave {got:?}, the semantics {want:?}; stored {text}, paths {pairs:?}")
        }
    }
    Ok(())
}

/// An array index as JavaScript reads a property name: canonical decimal,
/// below 2^32 - 1.
fn array_index(seg: &str) -> Option<usize> {
    let canonical = seg == "0"
        || (!seg.starts_with('0') && !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()));
    if !canonical || seg.len() > 10 {
        return None;
    }
    seg.parse::<u64>()
        .ok()
        .filter(|&n| n < 4_294_967_295)
        .map(|n| n as usize)
}

/// The README's merge semantics, applied to a parsed document: segments are
/// walked from the root; a missing, null or non-container intermediate
/// becomes {}; an array takes canonical decimal indexes, pads with null when
/// written past its end (refused beyond MAX_PADDING for one path, and beyond
/// MAX_PADDING nulls for all the paths of a merge: `budget` is what is left),
/// and ignores any other segment; the last segment gets the value, or is
/// removed (an array element becomes null). Err: the padding is refused.
fn expected(
    root: &mut Value,
    segs: &[String],
    val: Option<Value>,
    budget: &mut u64,
) -> std::result::Result<(), ()> {
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        cur = match cur {
            Value::Object(m) => {
                if last {
                    match val {
                        Some(v) => {
                            m.insert(seg.clone(), v);
                        }
                        None => {
                            m.remove(seg);
                        }
                    }
                    return Ok(());
                }
                let child = m.entry(seg.clone()).or_insert(Value::Null);
                if !(child.is_object() || child.is_array()) {
                    *child = Value::Object(Map::new());
                }
                child
            }
            Value::Array(a) => {
                let Some(idx) = array_index(seg) else {
                    return Ok(());
                };
                if idx >= a.len() {
                    if last && val.is_none() {
                        return Ok(());
                    }
                    if idx - a.len() > MAX_PADDING as usize {
                        return Err(());
                    }
                    *budget = budget.checked_sub((idx - a.len()) as u64).ok_or(())?;
                    a.resize(idx + 1, Value::Null);
                }
                if last {
                    a[idx] = val.unwrap_or(Value::Null);
                    return Ok(());
                }
                let child = &mut a[idx];
                if !(child.is_object() || child.is_array()) {
                    *child = Value::Object(Map::new());
                }
                child
            }
            _ => unreachable!("only containers are walked"),
        };
    }
    Ok(())
}
