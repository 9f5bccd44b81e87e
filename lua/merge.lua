-- Lossless, atomic merge of dirty dot-paths into a session stored as JSON text.
--
-- KEYS[1]  the session key
-- ARGV[1]  ttl in ms (a positive integer)
-- ARGV[2]  the longest stored text, in bytes, the script takes on (0: any). The
--          script's cost is about paths x stored bytes; the store sets this so
--          that no call holds Redis long (src/limits.rs, SCRIPT_WORK).
-- ARGV[3]  the most nulls a path may pad an array with (src/limits.rs)
-- ARGV[4], ARGV[5], ...  pairs of (dot path, value as JSON text); an empty value
--          text removes the path (JavaScript `undefined`).
--
-- The stored text is never decoded and re-encoded as a whole: the script checks
-- that it is a JSON object, finds the byte range of each path and splices the new
-- value in, so every byte it was not asked to touch stays as it was (empty arrays,
-- number spellings, escapes, key order, white space).
--
-- Semantics, equal to applying each path to JSON.parse(stored) in JavaScript:
--  * segments are walked from the root; a missing, null or non-container
--    intermediate becomes {};
--  * an array is indexed by a canonical decimal segment (0-based); writing past
--    the end pads with null, removing an element leaves null (a hole); a
--    non-index segment on an array is ignored, as JSON.stringify ignores it;
--  * the last segment gets the value, or is removed (every duplicate of the key).
-- Replies 1 when the session was written, 0 when the key does not exist (nothing is
-- created), -1 when the stored text is longer than ARGV[2] (nothing is written:
-- the store then merges on the client), and an ERR_CORRUPT_SESSION error when
-- the stored text is not UTF-8 text holding a JSON object (nothing is written).

local find, sub, byte, gsub, format = string.find, string.sub, string.byte, string.gsub, string.format
local concat, rep, floor, tonumber, char = table.concat, string.rep, math.floor, tonumber, string.char

local CORRUPT, NOT_UTF8, BAD_ARG = '\0corrupt\0', '\0notutf8\0', '\0badarg\0'
-- Writing far past an array's end pads with nulls, as JavaScript would; beyond
-- this many the path is refused rather than let Redis build a huge string.
local MAX_PADDING = tonumber(ARGV[3])
local function corrupt(why)
  error(CORRUPT .. why, 0)
end

-- The text must be UTF-8, as get() requires: every byte from 0x80 up belongs
-- to a well-formed sequence (no overlong form, no surrogate, at most U+10FFFF).
-- A plain find skips all-ASCII text at memory speed.
local function check_utf8(s)
  local q = 1
  while true do
    local a, b = find(s, '[\128-\255][\128-\191]*', q)
    if not a then return end
    local lead, n, second = byte(s, a), b - a + 1, byte(s, a + 1)
    local ok
    if lead >= 194 and lead <= 223 then
      ok = n == 2
    elseif lead >= 224 and lead <= 239 then
      ok = n == 3 and not (lead == 224 and second < 160) and not (lead == 237 and second > 159)
    elseif lead >= 240 and lead <= 244 then
      ok = n == 4 and not (lead == 240 and second < 144) and not (lead == 244 and second > 143)
    end
    if not ok then error(NOT_UTF8 .. 'stored session is not UTF-8 text (byte ' .. a .. ')', 0) end
    q = b + 1
  end
end

-- Byte values used below.
local QUOTE, BSLASH, COLON, COMMA = 34, 92, 58, 44
local LBRACE, RBRACE, LBRACKET, RBRACKET = 123, 125, 91, 93

local function skip_ws(s, p)
  local _, e = find(s, '^[ \t\r\n]*', p)
  return e + 1
end

---------------------------------------------------------------------------
-- Validation: the whole text must be one JSON object (RFC 8259 grammar).
--
-- Lua in Redis costs about 2 us per token it touches and 20-50 ns per byte a
-- pattern with a character class scans; only plain finds and %b run at memory
-- speed. No Lua scan beats cjson's C decoder, so cjson decides first, with its
-- lenient number reading turned off, and the exact token walk below runs only
-- where cjson's verdict can differ from JSON.parse's.

-- The exact check, token by token.

-- p at the opening quote; returns the index after the closing quote.
local function check_string(s, p)
  local q = p + 1
  while true do
    local e = find(s, '["\\%z\1-\31]', q)
    if not e then corrupt('unterminated string at byte ' .. p) end
    local b = byte(s, e)
    if b == QUOTE then return e + 1 end
    if b ~= BSLASH then corrupt('control character in a string at byte ' .. e) end
    local n = byte(s, e + 1)
    if n == 117 then -- u
      if not find(s, '^%x%x%x%x', e + 2) then corrupt('bad \\u escape at byte ' .. e) end
      q = e + 6
    elseif n == QUOTE or n == BSLASH or n == 47 or n == 98 or n == 102
        or n == 110 or n == 114 or n == 116 then -- " \ / b f n r t
      q = e + 2
    else
      corrupt('bad escape at byte ' .. e)
    end
  end
end

-- Returns the index after a JSON number starting at p, or nil.
local function check_number(s, p)
  local _, e = find(s, '^-?0', p)
  if not e then _, e = find(s, '^-?[1-9]%d*', p) end
  if not e then return nil end
  local _, f = find(s, '^%.%d+', e + 1)
  if f then e = f end
  _, f = find(s, '^[eE][+-]?%d+', e + 1)
  if f then e = f end
  return e + 1
end

-- p at a key's opening quote; returns the index of the member's value.
local function check_key(s, p)
  if byte(s, p) ~= QUOTE then corrupt('expected a key at byte ' .. p) end
  p = skip_ws(s, check_string(s, p))
  if byte(s, p) ~= COLON then corrupt("expected ':'" .. ' at byte ' .. p) end
  return skip_ws(s, p + 1)
end

local function exact_validate(s)
  local p = skip_ws(s, 1)
  if byte(s, p) ~= LBRACE then corrupt('the root is not an object at byte ' .. p) end
  local stack, top = {}, 0
  local want_value = true
  while true do
    if want_value then
      local c = byte(s, p)
      want_value = false
      if c == LBRACE or c == LBRACKET then
        local close = c + 2 -- '{' + 2 == '}', '[' + 2 == ']'
        p = skip_ws(s, p + 1)
        if byte(s, p) == close then
          p = p + 1
        else
          top = top + 1
          stack[top] = close
          if c == LBRACE then p = check_key(s, p) end
          want_value = true
        end
      elseif c == QUOTE then
        p = check_string(s, p)
      elseif c == 116 then -- t
        if sub(s, p, p + 3) ~= 'true' then corrupt('unexpected character at byte ' .. p) end
        p = p + 4
      elseif c == 102 then -- f
        if sub(s, p, p + 4) ~= 'false' then corrupt('unexpected character at byte ' .. p) end
        p = p + 5
      elseif c == 110 then -- n
        if sub(s, p, p + 3) ~= 'null' then corrupt('unexpected character at byte ' .. p) end
        p = p + 4
      else
        p = check_number(s, p) or corrupt('unexpected character at byte ' .. p)
      end
    else
      p = skip_ws(s, p)
      if top == 0 then
        if p <= #s then corrupt('text after the object at byte ' .. p) end
        return
      end
      local c = byte(s, p)
      if c == COMMA then
        p = skip_ws(s, p + 1)
        if stack[top] == RBRACE then p = check_key(s, p) end
        want_value = true
      elseif c == stack[top] then
        top = top - 1
        p = p + 1
      else
        corrupt("expected ',' or a closing bracket" .. ' at byte ' .. p)
      end
    end
  end
end


-- Control characters other than tab, line feed and carriage return are never
-- valid in JSON text; each is looked for with a plain find (memchr speed).
local CONTROLS = {}
for b = 0, 31 do
  if b ~= 9 and b ~= 10 and b ~= 13 then CONTROLS[#CONTROLS + 1] = char(b) end
end

-- Whether a '.' stands between a digit and a non-digit ("1." or "1.e5"), which
-- strtod, and so cjson, accepts. Found in strings too: then the exact walk decides.
local function loose_fraction(s)
  local q = 1
  while true do
    local e = find(s, '.', q, true)
    if not e then return false end
    local before, after = byte(s, e - 1), byte(s, e + 1)
    if before and before >= 48 and before <= 57 and not (after and after >= 48 and after <= 57) then return true end
    q = e + 1
  end
end

local function validate(s)
  check_utf8(s)
  if not find(s, '^[ \t\r\n]*{') then corrupt('the root is not an object') end
  for i = 1, #CONTROLS do
    local at = find(s, CONTROLS[i], 1, true)
    if at then corrupt('a control character at byte ' .. at) end
  end
  -- cjson takes raw tabs and line breaks inside strings, and "1.": the exact walk decides.
  if find(s, '\n', 1, true) or find(s, '\t', 1, true) or find(s, '\r', 1, true) or loose_fraction(s) then
    return exact_validate(s)
  end
  local lenient = cjson.decode_invalid_numbers()
  cjson.decode_invalid_numbers(false) -- no NaN, Infinity, hex, +1, leading zeros
  local ok = pcall(cjson.decode, s)
  cjson.decode_invalid_numbers(lenient)
  -- cjson refuses lone surrogate escapes and nesting deeper than 1000, which JSON allows.
  if not ok then exact_validate(s) end
end

---------------------------------------------------------------------------
-- Navigation over text already validated.

-- p at an opening quote; returns the index of the closing quote and whether the
-- string holds an escape.
local function string_end(s, p)
  local q, escaped = p + 1, false
  while true do
    local e = find(s, '["\\]', q)
    if byte(s, e) == QUOTE then return e, escaped end
    escaped = true
    q = e + 2 -- the escaped character; \uXXXX's digits are plain characters
  end
end

-- Returns the index after the value that starts at p.
local function value_end(s, p)
  local c = byte(s, p)
  if c == QUOTE then return string_end(s, p) + 1 end
  if c == LBRACE or c == LBRACKET then
    -- %b counts brackets in C, but a bracket inside a string misleads it. Its
    -- answer is right when no string lies inside, or when the text up to it is one
    -- complete JSON value (a parser decides where a value ends from what it has
    -- read, so no other end can give a complete value): cjson checks that in C.
    local _, e = find(s, c == LBRACE and '^%b{}' or '^%b[]', p)
    if e then
      local quote = find(s, '"', p, true)
      if not quote or quote > e or pcall(cjson.decode, sub(s, p, e)) then return e + 1 end
    end
    -- cjson refused (a lone surrogate escape, deep nesting) or %b was misled: walk.
    local depth, q = 0, p
    while true do
      local e = find(s, '[%[%]{}"]', q)
      local b = byte(s, e)
      if b == QUOTE then
        q = string_end(s, e) + 1
      elseif b == LBRACE or b == LBRACKET then
        depth, q = depth + 1, e + 1
      else
        depth, q = depth - 1, e + 1
        if depth == 0 then return q end
      end
    end
  end
  local _, e = find(s, '^[^,%]}%s]*', p) -- number, true, false, null
  return e + 1
end

local SIMPLE_ESCAPES = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function utf8(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
    0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- The characters of a JSON string body (without quotes) as UTF-8.
local function unescape(raw)
  local out, n, q = {}, 0, 1
  while true do
    local e = find(raw, '\\', q, true)
    n = n + 1
    if not e then
      out[n] = sub(raw, q)
      return concat(out)
    end
    out[n] = sub(raw, q, e - 1)
    local c = sub(raw, e + 1, e + 1)
    n = n + 1
    if c == 'u' then
      local cp = tonumber(sub(raw, e + 2, e + 5), 16)
      q = e + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(raw, q, q + 1) == '\\u' then
        local lo = tonumber(sub(raw, q + 2, q + 5), 16)
        if lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          q = q + 6
        end
      end
      out[n] = utf8(cp)
    else
      out[n] = SIMPLE_ESCAPES[c]
      q = e + 2
    end
  end
end

local KEY_ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

-- A key as JSON.stringify writes it.
local function encode_key(k)
  return '"' .. (gsub(k, '[%z\1-\31"\\]', function(c)
    return KEY_ESCAPES[c] or format('\\u%04x', byte(c))
  end)) .. '"'
end

-- Scans the object at p for key. Returns the last member with that key as
-- {key start, value start, end of the previous member's value or nil}, or nil;
-- then the index of the closing brace (nil when the scan stopped early) and
-- whether the object is empty. JSON.parse keeps the last of duplicate keys, so
-- the scan stops at a match only when no duplicate can follow: the key's text
-- does not occur again and no escape after it could spell the key otherwise.
local function find_member(s, p, key)
  local q = skip_ws(s, p + 1)
  if byte(s, q) == RBRACE then return nil, q, true end
  local klen, found, prev_end = #key, nil, nil
  local quoted = not find(key, '[%z\1-\31"\\]') and '"' .. key .. '"'
  while true do
    local ks = q
    local ke, escaped = string_end(s, ks)
    local vs = skip_ws(s, skip_ws(s, ke + 1) + 1) -- past ':'
    local match
    if escaped then
      match = unescape(sub(s, ks + 1, ke - 1)) == key
    else
      match = ke - ks - 1 == klen and sub(s, ks + 1, ke - 1) == key
    end
    if match then
      found = { ks, vs, prev_end }
      if quoted and not find(s, quoted, vs, true) and not find(s, '\\', vs, true) then
        return found, nil, false
      end
    end
    local ve = value_end(s, vs)
    q = skip_ws(s, ve)
    if byte(s, q) == RBRACE then return found, q, false end
    q = skip_ws(s, q + 1) -- past ','
    prev_end = ve
  end
end

-- The span a member's removal takes out: with the comma before it, or else the
-- comma after it, so the object stays valid JSON.
local function member_span(s, m)
  local ve = value_end(s, m[2])
  if m[3] then return m[3], ve end
  local q = skip_ws(s, ve)
  if byte(s, q) == COMMA then return m[1], skip_ws(s, q + 1) end
  return m[1], ve
end

-- Finds element idx (0-based) of the array at p. Returns its value start and end,
-- or nil, the array's length and the index of the closing bracket.
local function find_element(s, p, idx)
  local q = skip_ws(s, p + 1)
  if byte(s, q) == RBRACKET then return nil, 0, q end
  local i = 0
  while true do
    local ve = value_end(s, q)
    if i == idx then return q, ve end
    i = i + 1
    q = skip_ws(s, ve)
    if byte(s, q) == RBRACKET then return nil, i, q end
    q = skip_ws(s, q + 1)
  end
end

-- A segment that JavaScript treats as an array index, as a number; else nil.
local function array_index(seg)
  if seg == '0' then return 0 end
  if find(seg, '^[1-9]%d*$') then
    local n = tonumber(seg)
    if n < 4294967295 then return n end
  end
  return nil
end

local function splice(s, from, to, text) -- replaces s[from, to) by text
  return sub(s, 1, from - 1) .. text .. sub(s, to)
end

-- The text of a fresh object chain for segs[i..], ending in val (nil: removal).
local function build(segs, i, val)
  local n = #segs
  if i > n then return val end
  if i == n and val == nil then return '{}' end
  local inner = build(segs, i + 1, val)
  if inner == nil then return '{}' end
  return '{' .. encode_key(segs[i]) .. ':' .. inner .. '}'
end

-- The text with one path applied. val is JSON text, or nil to remove.
local function apply(s, segs, val)
  local n = #segs
  local p = skip_ws(s, 1)
  for i = 1, n do
    local seg, last = segs[i], i == n
    if byte(s, p) == LBRACE then
      local m, close, empty = find_member(s, p, seg)
      if last and val == nil then
        while m do -- remove every member with this key
          local from, to = member_span(s, m)
          s = splice(s, from, to, '')
          m = find_member(s, p, seg)
        end
        return s
      end
      if not m then
        return splice(s, close, close, (empty and '' or ',') .. encode_key(seg) .. ':' .. build(segs, i + 1, val))
      end
      local c = byte(s, m[2])
      if last or (c ~= LBRACE and c ~= LBRACKET) then
        return splice(s, m[2], value_end(s, m[2]), build(segs, i + 1, val))
      end
      p = m[2]
    else -- an array
      local idx = array_index(seg)
      if not idx then return s end
      local vs, ve_or_len, close = find_element(s, p, idx)
      if not vs then
        if last and val == nil then return s end
        local len = ve_or_len
        if idx - len > MAX_PADDING then
          error(BAD_ARG .. 'array index ' .. seg .. ' is more than ' .. MAX_PADDING .. ' past the end of the array', 0)
        end
        return splice(s, close, close,
          (len > 0 and ',' or '') .. rep('null,', idx - len) .. build(segs, i + 1, val))
      end
      if last and val == nil then return splice(s, vs, ve_or_len, 'null') end
      local c = byte(s, vs)
      if last or (c ~= LBRACE and c ~= LBRACKET) then
        return splice(s, vs, ve_or_len, build(segs, i + 1, val))
      end
      p = vs
    end
  end
  return s
end

local function split(path)
  local segs, n, q = {}, 0, 1
  while true do
    local e = find(path, '.', q, true)
    n = n + 1
    if not e then
      segs[n] = sub(path, q)
      return segs
    end
    segs[n] = sub(path, q, e - 1)
    q = e + 1
  end
end

---------------------------------------------------------------------------

local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local max_bytes = tonumber(ARGV[2])
if max_bytes > 0 and #stored > max_bytes then return -1 end

local ok, result = pcall(function()
  validate(stored)
  local s = stored
  for i = 4, #ARGV, 2 do
    local val = ARGV[i + 1]
    if val == '' then val = nil end
    s = apply(s, split(ARGV[i]), val)
  end
  return s
end)
if not ok then
  if type(result) == 'string' then
    if sub(result, 1, #CORRUPT) == CORRUPT then
      return redis.error_reply('ERR_CORRUPT_SESSION stored session is not a JSON object: ' .. sub(result, #CORRUPT + 1))
    elseif sub(result, 1, #NOT_UTF8) == NOT_UTF8 then
      return redis.error_reply('ERR_CORRUPT_SESSION ' .. sub(result, #NOT_UTF8 + 1))
    elseif sub(result, 1, #BAD_ARG) == BAD_ARG then
      return redis.error_reply('ERR_INVALID_ARG ' .. sub(result, #BAD_ARG + 1))
    end
  end
  error(result, 0)
end

redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return 1
