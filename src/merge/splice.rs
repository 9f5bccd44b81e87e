//! Merge on the client: the semantics of `lua/merge.lua`, applied in Rust to the
//! text read from Redis, so the server only has to compare and swap
//! (`lua/swap.lua`). Scanning here runs at memory speed; in Redis's Lua the same
//! scan costs about 2 us per token.
//!
//! Works on bytes, as the script does: the stored text is never decoded and
//! re-encoded, so every byte no path touches stays as it was.

/// Why a merge could not be applied here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpliceError {
    /// The stored text is not a JSON object.
    Corrupt(String),
    /// A path asks for something refused (padding an array too far).
    BadArg(String),
    /// The deadline passed before every path was applied.
    OutOfTime,
}

type Result<T> = std::result::Result<T, SpliceError>;

use std::time::Instant;

use crate::limits::MAX_PADDING;

fn corrupt<T>(why: &str, at: usize) -> Result<T> {
    Err(SpliceError::Corrupt(format!(
        "stored session is not a JSON object: {why} at byte {}",
        at + 1
    )))
}

fn skip_ws(s: &[u8], mut p: usize) -> usize {
    while p < s.len() && matches!(s[p], b' ' | b'\t' | b'\n' | b'\r') {
        p += 1;
    }
    p
}

/// p at an opening quote: the index after the closing quote, checked.
fn string_end(s: &[u8], p: usize) -> Result<usize> {
    let mut q = p + 1;
    loop {
        // Jump to the next quote or backslash; the bytes jumped over must not
        // be control characters.
        let run = memchr::memchr2(b'"', b'\\', &s[q..]).unwrap_or(s.len() - q);
        if let Some(i) = s[q..q + run].iter().position(|&b| b < 0x20) {
            return corrupt("control character in a string", q + i);
        }
        q += run;
        // The jump stops only at a quote, a backslash or the end.
        match s.get(q) {
            None => return corrupt("unterminated string", p),
            Some(b'"') => return Ok(q + 1),
            Some(_) => match s.get(q + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => q += 2,
                Some(b'u')
                    if s.len() >= q + 6 && s[q + 2..q + 6].iter().all(u8::is_ascii_hexdigit) =>
                {
                    q += 6
                }
                _ => return corrupt("bad escape", q),
            },
        }
    }
}

fn digits_end(s: &[u8], mut p: usize) -> usize {
    while p < s.len() && s[p].is_ascii_digit() {
        p += 1;
    }
    p
}

/// A JSON number at p: the index after it.
fn number_end(s: &[u8], p: usize) -> Result<usize> {
    let mut q = p;
    if s.get(q) == Some(&b'-') {
        q += 1;
    }
    match s.get(q) {
        Some(b'0') => q += 1,
        Some(b'1'..=b'9') => q = digits_end(s, q),
        _ => return corrupt("unexpected character", p),
    }
    if s.get(q) == Some(&b'.') {
        let e = digits_end(s, q + 1);
        if e == q + 1 {
            return corrupt("a fraction without digits", q);
        }
        q = e;
    }
    if matches!(s.get(q), Some(b'e' | b'E')) {
        q += 1;
        if matches!(s.get(q), Some(b'+' | b'-')) {
            q += 1;
        }
        let e = digits_end(s, q);
        if e == q {
            return corrupt("an exponent without digits", q);
        }
        q = e;
    }
    Ok(q)
}

/// p at a member's key: checks the key and the ':' after it; returns where
/// the member's value starts.
fn member_value(s: &[u8], q: usize) -> Result<usize> {
    if s.get(q) != Some(&b'"') {
        return corrupt("expected a key", q);
    }
    let q = skip_ws(s, string_end(s, q)?);
    if s.get(q) != Some(&b':') {
        return corrupt("expected ':'", q);
    }
    Ok(skip_ws(s, q + 1))
}

/// Checks that s is UTF-8 text holding one JSON object (RFC 8259).
pub fn validate(s: &[u8]) -> Result<()> {
    if let Err(e) = std::str::from_utf8(s) {
        return Err(SpliceError::Corrupt(not_utf8_message(e.valid_up_to())));
    }
    let q = skip_ws(s, 0);
    if s.get(q) != Some(&b'{') {
        return corrupt("the root is not an object", q);
    }
    let end = skip_ws(s, value_end(s, q)?);
    if end < s.len() {
        return corrupt("text after the object", end);
    }
    Ok(())
}

/// Whether a value to write is one JSON text (of any type).
fn is_json_text(v: &str) -> bool {
    let s = v.as_bytes();
    let start = skip_ws(s, 0);
    value_end(s, start).is_ok_and(|end| skip_ws(s, end) == s.len())
}

/// Checks the JSON value that starts at q; returns the index after it.
/// Iterative: nesting of any depth costs heap, never stack.
fn value_end(s: &[u8], mut q: usize) -> Result<usize> {
    // The closing bracket of every container the scan is inside.
    let mut open: Vec<u8> = Vec::new();
    loop {
        // A value starts at q.
        match s.get(q) {
            Some(&c @ (b'{' | b'[')) => {
                let close = if c == b'{' { b'}' } else { b']' };
                q = skip_ws(s, q + 1);
                if s.get(q) == Some(&close) {
                    q += 1;
                } else {
                    open.push(close);
                    if close == b'}' {
                        q = member_value(s, q)?;
                    }
                    continue;
                }
            }
            Some(b'"') => q = string_end(s, q)?,
            Some(b't') if s[q..].starts_with(b"true") => q += 4,
            Some(b'f') if s[q..].starts_with(b"false") => q += 5,
            Some(b'n') if s[q..].starts_with(b"null") => q += 4,
            _ => q = number_end(s, q)?,
        }
        // After a value: a comma and the next one, or closing brackets.
        loop {
            let Some(&close) = open.last() else {
                return Ok(q);
            };
            q = skip_ws(s, q);
            match s.get(q) {
                Some(b',') => {
                    q = skip_ws(s, q + 1);
                    if close == b'}' {
                        q = member_value(s, q)?;
                    }
                    break;
                }
                Some(&c) if c == close => {
                    open.pop();
                    q += 1;
                }
                _ => return corrupt("expected ',' or a closing bracket", q),
            }
        }
    }
}

/// The message for a stored text that is not UTF-8, as `get` and `merge` give it.
pub fn not_utf8_message(valid_up_to: usize) -> String {
    format!(
        "stored session is not UTF-8 text (byte {})",
        valid_up_to + 1
    )
}

// ---- navigation over validated text --------------------------------------
//
// The text was validated once; skipping a value need not check it again, only
// jump between quotes and brackets (memchr scans at memory speed).

/// p at an opening quote: the index after the closing quote.
fn skip_string(s: &[u8], p: usize) -> usize {
    let mut q = p + 1;
    loop {
        match memchr::memchr2(b'"', b'\\', &s[q..]) {
            Some(i) if s[q + i] == b'"' => return q + i + 1,
            Some(i) => q += i + 2, // an escape: skip the escaped character
            None => return s.len(),
        }
    }
}

/// Returns the index after the (valid) value at p.
fn skip_value(s: &[u8], p: usize) -> usize {
    match s[p] {
        b'"' => skip_string(s, p),
        open @ (b'{' | b'[') => {
            // In valid text the other kind of bracket is balanced inside, so
            // counting this kind outside strings finds the end.
            let close = if open == b'{' { b'}' } else { b']' };
            let mut depth = 0usize;
            let mut q = p;
            loop {
                let Some(i) = memchr::memchr3(b'"', open, close, &s[q..]) else {
                    return s.len();
                };
                let at = q + i;
                match s[at] {
                    b'"' => q = skip_string(s, at),
                    c if c == open => {
                        depth += 1;
                        q = at + 1;
                    }
                    _ => {
                        depth -= 1;
                        q = at + 1;
                        if depth == 0 {
                            return q;
                        }
                    }
                }
            }
        }
        _ => {
            let mut q = p;
            while q < s.len() && !matches!(s[q], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                q += 1;
            }
            q
        }
    }
}

/// The code points of a JSON string body, as UTF-8 (lone surrogates as their
/// three-byte form, as the script writes them).
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let hex =
        |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap_or("0"), 16).unwrap_or(0);
    while i < raw.len() {
        if raw[i] != b'\\' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        let byte = match c {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex(&raw[i..i + 4]);
                i += 4;
                if (0xD800..=0xDBFF).contains(&cp)
                    && raw[i..].starts_with(b"\\u")
                    && raw.len() >= i + 6
                {
                    let lo = hex(&raw[i + 2..i + 6]);
                    if (0xDC00..=0xDFFF).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                push_utf8(&mut out, cp);
                continue;
            }
            other => other, // " \ /
        };
        out.push(byte);
    }
    out
}

fn push_utf8(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend([
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend([
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

/// A key as JSON.stringify writes it.
fn encode_key(k: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in k.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// A member of an object: where its key and value are, and its neighbours.
/// `value_end` and `next_key` are known when the scan went past the member;
/// [`Member::end`] finds them otherwise.
struct Member {
    key_start: usize,
    value_start: usize,
    value_end: Option<usize>,
    prev_end: Option<usize>,
    next_key: Option<usize>,
}

impl Member {
    fn end(&self, s: &[u8]) -> usize {
        self.value_end
            .unwrap_or_else(|| skip_value(s, self.value_start))
    }

    /// The span removing the member takes out: with the comma before it, or
    /// else the comma after it, so the object stays valid JSON.
    fn removal(&self, s: &[u8]) -> (usize, usize) {
        let end = self.end(s);
        if let Some(prev) = self.prev_end {
            return (prev, end);
        }
        let next = self.next_key.or_else(|| {
            let after = skip_ws(s, end);
            (s[after] == b',').then(|| skip_ws(s, after + 1))
        });
        match next {
            Some(next) => (self.key_start, next),
            None => (self.key_start, end),
        }
    }
}

/// The last member with key in the object at p (JSON.parse keeps the last of
/// duplicates), the index of the closing brace (None when the scan stopped
/// early) and whether the object is empty. The scan stops at a match when no
/// duplicate can follow: the quoted key does not occur again and no escape
/// after it could spell the key otherwise. Then the member's own value is not
/// even skipped: a path that goes on into it does not need its end.
fn find_member(s: &[u8], p: usize, key: &[u8]) -> Result<(Option<Member>, Option<usize>, bool)> {
    let mut q = skip_ws(s, p + 1);
    if s[q] == b'}' {
        return Ok((None, Some(q), true));
    }
    let quoted = (!key.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')).then(|| {
        let mut k = Vec::with_capacity(key.len() + 2);
        k.push(b'"');
        k.extend_from_slice(key);
        k.push(b'"');
        k
    });
    let mut found: Option<Member> = None;
    let mut prev_end = None;
    loop {
        let key_start = q;
        let key_end = skip_string(s, q); // after the closing quote
        let raw = &s[key_start + 1..key_end - 1];
        let matches = if raw.contains(&b'\\') {
            unescape(raw) == key
        } else {
            raw == key
        };
        let value_start = skip_ws(s, skip_ws(s, key_end) + 1);
        if matches {
            if let Some(quoted) = &quoted {
                let rest = &s[value_start..];
                if memchr::memmem::find(rest, quoted).is_none()
                    && memchr::memchr(b'\\', rest).is_none()
                {
                    let member = Member {
                        key_start,
                        value_start,
                        value_end: None,
                        prev_end,
                        next_key: None,
                    };
                    return Ok((Some(member), None, false));
                }
            }
        }
        let value_end = skip_value(s, value_start);
        q = skip_ws(s, value_end);
        let next_key = (s[q] == b',').then(|| skip_ws(s, q + 1));
        if matches {
            found = Some(Member {
                key_start,
                value_start,
                value_end: Some(value_end),
                prev_end,
                next_key,
            });
        }
        match next_key {
            Some(next) => q = next,
            None => return Ok((found, Some(q), false)),
        }
        prev_end = Some(value_end);
    }
}

enum Element {
    Found(usize, usize),
    Missing { len: u64, close: usize },
}

fn find_element(s: &[u8], p: usize, idx: u64) -> Result<Element> {
    let mut q = skip_ws(s, p + 1);
    if s[q] == b']' {
        return Ok(Element::Missing { len: 0, close: q });
    }
    let mut i = 0;
    loop {
        let end = skip_value(s, q);
        if i == idx {
            return Ok(Element::Found(q, end));
        }
        i += 1;
        q = skip_ws(s, end);
        if s[q] == b']' {
            return Ok(Element::Missing { len: i, close: q });
        }
        q = skip_ws(s, q + 1);
    }
}

/// The value at the path `segs` (object keys, or array indexes as
/// JavaScript reads them) in a text known to be UTF-8 holding one JSON
/// object: its JSON text, or None when the path holds nothing. Reads only up
/// to the value, as a merge's splice does.
pub fn value_at<'s>(s: &'s [u8], segs: &[impl AsRef<str>]) -> Result<Option<&'s [u8]>> {
    let mut p = skip_ws(s, 0);
    for seg in segs.iter().map(AsRef::as_ref) {
        match s.get(p) {
            Some(b'{') => match find_member(s, p, seg.as_bytes())?.0 {
                Some(m) => p = m.value_start,
                None => return Ok(None),
            },
            Some(b'[') => {
                let Some(idx) = array_index(seg) else {
                    return Ok(None);
                };
                match find_element(s, p, idx)? {
                    Element::Found(start, _) => p = start,
                    Element::Missing { .. } => return Ok(None),
                }
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(&s[p..skip_value(s, p)]))
}

/// The index a segment names in an array, as JavaScript reads it.
fn array_index(seg: &str) -> Option<u64> {
    let b = seg.as_bytes();
    let canonical =
        seg == "0" || (!b.is_empty() && b[0] != b'0' && b.iter().all(u8::is_ascii_digit));
    if !canonical || b.len() > 10 {
        return None;
    }
    seg.parse::<u64>().ok().filter(|&n| n < 4_294_967_295)
}

/// The text of a fresh object chain for segs, ending in val (None: removal,
/// which leaves the last segment out). Iterative: a path of any length costs
/// heap, never stack.
fn build(segs: &[&str], val: Option<&[u8]>, out: &mut Vec<u8>) {
    let keys = match val {
        Some(_) => segs,
        None => &segs[..segs.len().saturating_sub(1)],
    };
    for key in keys {
        out.push(b'{');
        encode_key(key, out);
        out.push(b':');
    }
    out.extend_from_slice(val.unwrap_or(b"{}"));
    out.resize(out.len() + keys.len(), b'}');
}

fn built(segs: &[&str], val: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    build(segs, val, &mut out);
    out
}

fn splice(s: &mut Vec<u8>, from: usize, to: usize, text: &[u8]) {
    s.splice(from..to, text.iter().copied());
}

/// Applies one path to validated text; `padding` is how many nulls the
/// merge may still pad arrays with.
fn apply(s: &mut Vec<u8>, segs: &[&str], val: Option<&[u8]>, padding: &mut u64) -> Result<()> {
    let mut p = skip_ws(s, 0);
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let rest = &segs[i + 1..];
        if s[p] == b'{' {
            let (m, close, empty) = find_member(s, p, seg.as_bytes())?;
            if last && val.is_none() {
                // Remove every member with this key.
                let mut m = m;
                while let Some(member) = m {
                    let (from, to) = member.removal(s);
                    splice(s, from, to, b"");
                    m = find_member(s, p, seg.as_bytes())?.0;
                }
                return Ok(());
            }
            let Some(m) = m else {
                let close = close.unwrap_or_default(); // no match: the scan went to the end
                let mut text = Vec::new();
                if !empty {
                    text.push(b',');
                }
                encode_key(seg, &mut text);
                text.push(b':');
                build(rest, val, &mut text);
                splice(s, close, close, &text);
                return Ok(());
            };
            let c = s[m.value_start];
            if last || (c != b'{' && c != b'[') {
                let text = built(rest, val);
                let end = m.end(s);
                splice(s, m.value_start, end, &text);
                return Ok(());
            }
            p = m.value_start;
        } else {
            let Some(idx) = array_index(seg) else {
                return Ok(()); // a property on an array: JSON.stringify drops it
            };
            match find_element(s, p, idx)? {
                Element::Missing { len, close } => {
                    if last && val.is_none() {
                        return Ok(());
                    }
                    if idx - len > u64::from(MAX_PADDING) {
                        return Err(SpliceError::BadArg(format!(
                            "array index {seg} is more than {MAX_PADDING} past the end of the array"
                        )));
                    }
                    // In all, a merge pads with MAX_PADDING nulls at most:
                    // many paths must not make a session of gigabytes.
                    *padding = padding.checked_sub(idx - len).ok_or_else(|| {
                        SpliceError::BadArg(format!(
                            "the paths pad arrays past their ends with more than {MAX_PADDING} nulls in all"
                        ))
                    })?;
                    let mut text = Vec::new();
                    if len > 0 {
                        text.push(b',');
                    }
                    for _ in len..idx {
                        text.extend_from_slice(b"null,");
                    }
                    build(rest, val, &mut text);
                    splice(s, close, close, &text);
                    return Ok(());
                }
                Element::Found(start, end) => {
                    if last && val.is_none() {
                        splice(s, start, end, b"null");
                        return Ok(());
                    }
                    let c = s[start];
                    if last || (c != b'{' && c != b'[') {
                        let text = built(rest, val);
                        splice(s, start, end, &text);
                        return Ok(());
                    }
                    p = start;
                }
            }
        }
    }
    Ok(())
}

/// The stored text with every (path, value) pair applied in order; a value of
/// "" removes the path. Fails without a result when the text is not a JSON
/// object or a path is refused.
pub fn merge(stored: &[u8], pairs: &[String]) -> Result<Vec<u8>> {
    merge_until(stored, pairs, None)
}

/// [`merge`], giving up with [`SpliceError::OutOfTime`] once `deadline` has
/// passed (checked between paths: each costs about one pass over the text).
pub fn merge_until(stored: &[u8], pairs: &[String], deadline: Option<Instant>) -> Result<Vec<u8>> {
    validate(stored)?;
    merge_checked(stored, pairs, deadline)
}

/// `merge_until` of a text known to be UTF-8 holding one JSON object (one
/// this module produced from a checked text): the full scan is skipped.
pub fn merge_checked(
    stored: &[u8],
    pairs: &[String],
    deadline: Option<Instant>,
) -> Result<Vec<u8>> {
    // store.js writes values with JSON.stringify; whoever calls the native
    // half directly gets the same guarantee: the text stays JSON.
    for pair in pairs.chunks_exact(2) {
        if !pair[1].is_empty() && !is_json_text(&pair[1]) {
            let path: String = pair[0].chars().take(80).collect();
            return Err(SpliceError::BadArg(format!(
                "the value of path '{path}' is not JSON text"
            )));
        }
    }
    let mut s = stored.to_vec();
    let mut padding = u64::from(MAX_PADDING);
    for pair in pairs.chunks_exact(2) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(SpliceError::OutOfTime);
        }
        let segs: Vec<&str> = pair[0].split('.').collect();
        let val = (!pair[1].is_empty()).then(|| pair[1].as_bytes());
        apply(&mut s, &segs, val, &mut padding)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(stored: &str, pairs: &[(&str, &str)]) -> String {
        let pairs: Vec<String> = pairs
            .iter()
            .flat_map(|(p, v)| [p.to_string(), v.to_string()])
            .collect();
        String::from_utf8(merge(stored.as_bytes(), &pairs).unwrap()).unwrap()
    }

    #[test]
    fn sets_adds_and_removes_paths() {
        assert_eq!(
            m(
                r#"{"data":{"user":{"name":"Ada","id":7},"cart":[]},"meta":{}}"#,
                &[
                    ("data.user.name", r#""P""#),
                    ("data.user.id", ""),
                    ("data.n", "1")
                ]
            ),
            r#"{"data":{"user":{"name":"P"},"cart":[],"n":1},"meta":{}}"#
        );
        assert_eq!(m(r#"{"a":1,"b":2}"#, &[("a", "")]), r#"{"b":2}"#);
        assert_eq!(m(r#"{"a":1}"#, &[("a", "")]), r#"{}"#);
        assert_eq!(m(r#"{"a":{}}"#, &[("a.b.c", "")]), r#"{"a":{"b":{}}}"#);
        assert_eq!(m(r#"{"a":5}"#, &[("a.b", "")]), r#"{"a":{}}"#);
    }

    #[test]
    fn arrays() {
        assert_eq!(
            m(r#"{"i":[1,2]}"#, &[("i.4", "9")]),
            r#"{"i":[1,2,null,null,9]}"#
        );
        assert_eq!(m(r#"{"i":[1,2,3]}"#, &[("i.1", "")]), r#"{"i":[1,null,3]}"#);
        assert_eq!(
            m(r#"{"i":[{"q":1}]}"#, &[("i.0.q", "2")]),
            r#"{"i":[{"q":2}]}"#
        );
        assert_eq!(
            m(r#"{"i":[1]}"#, &[("i.length", "0"), ("i.01", "0")]),
            r#"{"i":[1]}"#
        );
        assert_eq!(
            m(r#"{"i":[]}"#, &[("i.1.x", "1")]),
            r#"{"i":[null,{"x":1}]}"#
        );
    }

    #[test]
    fn keeps_untouched_bytes_and_white_space() {
        let stored = "{ \"a\" : [ ] , \"n\" : 1e+300, \"u\" : \"x\\/y\" }";
        assert_eq!(
            m(stored, &[("b", "1")]),
            "{ \"a\" : [ ] , \"n\" : 1e+300, \"u\" : \"x\\/y\" ,\"b\":1}"
        );
    }

    #[test]
    fn matches_escaped_keys_and_writes_keys_as_json_stringify_does() {
        assert_eq!(
            m(r#"{"\u00e9":1,"a\/b":2}"#, &[("é", "3"), ("a/b", "4")]),
            r#"{"\u00e9":3,"a\/b":4}"#
        );
        // A key of escapes of each UTF-8 width (one to four bytes: a
        // surrogate pair, and the last code point, whose first byte is F4)
        // is matched by its code points.
        assert_eq!(
            m(
                r#"{"\u0041\u00e9\u20ac\ud83d\ude00\udbff\udfff!":1}"#,
                &[("Aé€😀\u{10ffff}!", "2")]
            ),
            r#"{"\u0041\u00e9\u20ac\ud83d\ude00\udbff\udfff!":2}"#
        );
        // A high surrogate not followed by a low one stays alone (its
        // three-byte form, which no path spells): nothing matches it.
        assert_eq!(
            m(r#"{"\ud83d\u0041":1,"\ud83d":2}"#, &[("A", "3")]),
            r#"{"\ud83d\u0041":1,"\ud83d":2,"A":3}"#
        );
        // Escapes amid other bytes, a surrogate pair among them.
        assert_eq!(
            m(r#"{"x\u00e9y\ud83d\ude00z\tw":1}"#, &[("xéy😀z\tw", "2")]),
            r#"{"x\u00e9y\ud83d\ude00z\tw":2}"#
        );
        assert_eq!(
            m(r#"{}"#, &[("q\"\\\n\u{1}\r\t\u{8}\u{c}\u{1f} /", "1")]),
            r#"{"q\"\\\n\u0001\r\t\b\f\u001f /":1}"#
        );
    }

    #[test]
    fn duplicates_last_wins_and_all_go() {
        assert_eq!(m(r#"{"a":1,"a":2}"#, &[("a", "3")]), r#"{"a":1,"a":3}"#);
        assert_eq!(m(r#"{"a":1,"b":0,"a":2}"#, &[("a", "")]), r#"{"b":0}"#);
    }

    #[test]
    fn refuses_text_that_is_not_a_json_object() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":NaN}"#,
            "{\"a\":\"\t\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":1} x"#,
            "{'a':1}",
        ] {
            assert!(
                matches!(merge(bad.as_bytes(), &[]), Err(SpliceError::Corrupt(_))),
                "{bad}"
            );
        }
        assert!(
            merge(br#"{"a":"\ud800"}"#, &[]).is_ok(),
            "lone surrogates are valid JSON"
        );
    }

    #[test]
    fn checks_strings_byte_by_byte() {
        // Every byte from a space up is a string's own; a control character
        // is refused where it is, by its byte.
        let printable: String = (0x20u8..0x7f)
            .filter(|&b| b != b'"' && b != b'\\')
            .map(char::from)
            .collect();
        let stored = format!(r#"{{"a":"{printable} é"}}"#);
        assert_eq!(
            m(&stored, &[("b", "1")]),
            format!(r#"{{"a":"{printable} é","b":1}}"#)
        );
        match merge(b"{\"ab\":\"x\x01\"}", &[]) {
            Err(SpliceError::Corrupt(m)) => {
                assert!(
                    m.ends_with("control character in a string at byte 9"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        // \u takes exactly four hex digits, all there.
        for bad in [
            r#"{"a":"\u12"}"#,
            r#"{"a":"\uZZZZ"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":"\u"#,
        ] {
            assert!(
                matches!(merge(bad.as_bytes(), &[]), Err(SpliceError::Corrupt(_))),
                "{bad}"
            );
        }
        assert!(merge(br#"{"a":"\u00aF"}"#, &[]).is_ok());
    }

    #[test]
    fn skips_values_whose_strings_hold_brackets_and_literals() {
        // Values before the path are skipped by counting brackets outside
        // strings: a bracket or an escaped quote inside a string is not one.
        let stored =
            r#"{"a":{"s":"}]{[\"","t":[true,false,null,"]"]},"b":[{"c":"}"},["]"]],"n":1}"#;
        assert_eq!(
            m(stored, &[("n", "2")]),
            stored.replace(r#""n":1"#, r#""n":2"#)
        );
        assert_eq!(
            m(stored, &[("b.1.0", "0"), ("a.t.1", "true")]),
            stored
                .replace(r#"["]"]"#, "[0]")
                .replace("[true,false,null", "[true,true,null")
        );
        // A literal is whole, and brackets close as they opened.
        for bad in [
            r#"{"a":tru}"#,
            r#"{"a":fals}"#,
            r#"{"a":nul}"#,
            r#"{"a":tXyZ}"#,
            r#"{"a":fXlse}"#,
            r#"{"a":nXll}"#,
            r#"{"a":[1}}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":[}"#,
        ] {
            assert!(
                matches!(merge(bad.as_bytes(), &[]), Err(SpliceError::Corrupt(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_far_padding() {
        let pairs = vec!["a.100001".to_string(), "1".to_string()];
        assert!(matches!(
            merge(br#"{"a":[]}"#, &pairs),
            Err(SpliceError::BadArg(_))
        ));
    }

    #[test]
    fn pads_up_to_the_limit_counted_from_the_end() {
        let pad = u64::from(MAX_PADDING);
        let pairs = |seg: u64| vec![format!("a.{seg}"), "1".to_string()];
        // Exactly MAX_PADDING nulls past the end is within the limit, counted
        // from the array's end (two elements here), alone or in all.
        let out = merge(br#"{"a":[1,2]}"#, &pairs(pad + 2)).unwrap();
        assert_eq!(out.len(), r#"{"a":[1,2,1]}"#.len() + 5 * pad as usize);
        assert!(out.ends_with(b"null,null,1]}"));
        match merge(br#"{"a":[1,2]}"#, &pairs(pad + 3)) {
            Err(SpliceError::BadArg(m)) => assert_eq!(
                m,
                format!(
                    "array index {} is more than {pad} past the end of the array",
                    pad + 3
                )
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn goes_into_elements_and_replaces_scalars_on_the_way() {
        assert_eq!(
            m(r#"{"i":[{"q":1,"r":2}]}"#, &[("i.0.q", "")]),
            r#"{"i":[{"r":2}]}"#
        );
        assert_eq!(
            m(
                r#"{"i":[5,[1],"s"]}"#,
                &[("i.0.x", "1"), ("i.1.0", "2"), ("i.2.y", "")]
            ),
            r#"{"i":[{"x":1},[2],{}]}"#
        );
    }

    #[test]
    fn array_indexes_end_where_javascripts_do() {
        // 4294967294 (2^32 - 2, ten digits) is the last index: far past the
        // padding limit. From 4294967295 a segment names a property, which
        // JSON.stringify leaves out of an array: nothing changes.
        for (seg, index) in [
            ("4294967294", true),
            ("4294967295", false),
            ("10000000000", false),
        ] {
            let pairs = vec![format!("a.{seg}"), "1".to_string()];
            let got = merge(br#"{"a":[]}"#, &pairs);
            if index {
                assert!(matches!(got, Err(SpliceError::BadArg(_))), "{seg}: {got:?}");
            } else {
                assert_eq!(got.unwrap(), br#"{"a":[]}"#.to_vec(), "{seg}");
            }
        }
    }

    #[test]
    fn refuses_padding_past_the_limit_in_all() {
        // Each path alone is within the limit; together they are not.
        let pairs: Vec<String> = ["a.60000", "1", "b.60000", "1"].map(String::from).to_vec();
        match merge(br#"{"a":[],"b":[]}"#, &pairs) {
            Err(SpliceError::BadArg(m)) => assert!(m.contains("in all"), "{m}"),
            other => panic!("{other:?}"),
        }
        let within: Vec<String> = ["a.50000", "1", "b.49999", "1"].map(String::from).to_vec();
        assert!(merge(br#"{"a":[],"b":[]}"#, &within).is_ok());
    }

    #[test]
    fn deep_nesting_and_long_paths_cost_no_stack() {
        // Far deeper than any thread's stack would allow a recursive walk.
        let n = 1_000_000;
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        let pairs = vec!["b".to_string(), "1".to_string()];
        let out = merge(deep.as_bytes(), &pairs).unwrap();
        assert!(out.ends_with(b"],\"b\":1}"));
        let unclosed = format!("{{\"a\":{}", "{\"a\":".repeat(n));
        assert!(matches!(
            merge(unclosed.as_bytes(), &[]),
            Err(SpliceError::Corrupt(_))
        ));
        let long = vec!["x"; 200_000].join(".");
        let out = merge(b"{}", &[long, "1".to_string()]).unwrap();
        assert_eq!(out.len(), 2 + 4 + 199_999 * 6 + 1);
        assert!(out.starts_with(b"{\"x\":{\"x\":"));
    }

    #[test]
    fn refuses_values_that_are_not_json_text() {
        for bad in ["\"", "{", "[1,", "tru", "1 2", "{\"a\"}", "'x'"] {
            let pairs = vec![
                "a".to_string(),
                bad.to_string(),
                "b".to_string(),
                "1".to_string(),
            ];
            assert!(
                matches!(merge(b"{\"a\":[{}]}", &pairs), Err(SpliceError::BadArg(_))),
                "{bad}"
            );
        }
        for good in ["1", " [1, {\"b\": null}] ", "\"x\"", "-0.5e3", "{}"] {
            assert!(
                merge(b"{}", &["a".to_string(), good.to_string()]).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let pairs = vec!["a".to_string(), "1".to_string()];
        let past = Some(Instant::now());
        assert_eq!(
            merge_until(b"{}", &pairs, past),
            Err(SpliceError::OutOfTime)
        );
        assert_eq!(merge_until(b"{}", &[], past), Ok(b"{}".to_vec()));
    }

    #[test]
    fn refuses_text_that_is_not_utf8_as_get_does() {
        // The words get gives (store.js), checked here as written.
        assert_eq!(
            merge(b"{\"a\":\"\xff\"}", &[]),
            Err(SpliceError::Corrupt(
                "stored session is not UTF-8 text (byte 7)".into()
            ))
        );
    }

    #[test]
    fn a_splice_of_a_checked_text_is_checked_text() {
        // What lets a merge skip the check of a text this store spliced.
        let pairs: Vec<String> = [
            ("data.a.b.c", "[1,{\"x\":\"\\u00e9\"}]"),
            ("data.cart", "[]"),
            ("meta.gone", ""),
            ("data.\u{e9}t\u{e9}", "\"caf\u{e9}\""),
        ]
        .iter()
        .flat_map(|(p, v)| [p.to_string(), v.to_string()])
        .collect();
        let mut text = br#"{"data":{"cart":[1,2],"a":7},"meta":{"gone":true}}"#.to_vec();
        for _ in 0..3 {
            let next = merge_until(&text, &pairs, None).unwrap();
            assert_eq!(validate(&next), Ok(()));
            assert_eq!(merge_checked(&text, &pairs, None).unwrap(), next);
            text = next;
        }
    }
}
