-- Lossless, atomic merge of dirty dot-paths into a session stored as JSON text.
--
-- KEYS[1]  the session key
-- ARGV[1]  ttl in ms (a positive integer)
-- ARGV[2], ARGV[3], ...  pairs of (dot path, value as JSON text); an empty value
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
-- created), and an ERR_CORRUPT_SESSION error when the stored text is not a JSON
-- object (nothing is written).

local find, sub, byte, gsub, format = string.find, string.sub, string.byte, string.gsub, string.format
local concat, rep, floor, tonumber, char = table.concat, string.rep, math.floor, tonumber, string.char

local CORRUPT, BAD_ARG = '\0corrupt\0', '\0badarg\0'
-- Writing far past an array's end pads with nulls, as JavaScript would; beyond
-- this many the path is refused rather than let Redis build a huge string.
local MAX_PADDING = 100000
local function corrupt(pos, why)
  error(CORRUPT .. why .. ' at byte ' .. pos, 0)
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

-- p at the opening quote; returns the index after the closing quote.
local function check_string(s, p)
  local q = p + 1
  while true do
    local e = find(s, '["\\%z\1-\31]', q)
    if not e then corrupt(p, 'unterminated string') end
    local b = byte(s, e)
    if b == QUOTE then return e + 1 end
    if b ~= BSLASH then corrupt(e, 'control character in a string') end
    local n = byte(s, e + 1)
    if n == 117 then -- u
      if not find(s, '^%x%x%x%x', e + 2) then corrupt(e, 'bad \\u escape') end
      q = e + 6
    elseif n == QUOTE or n == BSLASH or n == 47 or n == 98 or n == 102
        or n == 110 or n == 114 or n == 116 then -- " \ / b f n r t
      q = e + 2
    else
      corrupt(e, 'bad escape')
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
  if byte(s, p) ~= QUOTE then corrupt(p, 'expected a key') end
  p = skip_ws(s, check_string(s, p))
  if byte(s, p) ~= COLON then corrupt(p, "expected ':'") end
  return skip_ws(s, p + 1)
end

local function validate(s)
  local p = skip_ws(s, 1)
  if byte(s, p) ~= LBRACE then corrupt(p, 'the root is not an object') end
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
        if sub(s, p, p + 3) ~= 'true' then corrupt(p, 'unexpected character') end
        p = p + 4
      elseif c == 102 then -- f
        if sub(s, p, p + 4) ~= 'false' then corrupt(p, 'unexpected character') end
        p = p + 5
      elseif c == 110 then -- n
        if sub(s, p, p + 3) ~= 'null' then corrupt(p, 'unexpected character') end
        p = p + 4
      else
        p = check_number(s, p) or corrupt(p, 'unexpected character')
      end
    else
      p = skip_ws(s, p)
      if top == 0 then
        if p <= #s then corrupt(p, 'text after the object') end
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
        corrupt(p, "expected ',' or a closing bracket")
      end
    end
  end
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
-- {key start, value start, value end (exclusive), end of the previous member's
-- value or nil, start of the next member's key or nil}, or nil; and the index of
-- the closing brace and whether the object is empty.
local function find_member(s, p, key)
  local q = skip_ws(s, p + 1)
  if byte(s, q) == RBRACE then return nil, q, true end
  local klen, found, prev_end = #key, nil, nil
  while true do
    local ks = q
    local ke, escaped = string_end(s, ks)
    local vs = skip_ws(s, skip_ws(s, ke + 1) + 1) -- past ':'
    local ve = value_end(s, vs)
    local match
    if escaped then
      match = unescape(sub(s, ks + 1, ke - 1)) == key
    else
      match = ke - ks - 1 == klen and sub(s, ks + 1, ke - 1) == key
    end
    if match then found = { ks, vs, ve, prev_end } end
    q = skip_ws(s, ve)
    if byte(s, q) == RBRACE then return found, q, false end
    q = skip_ws(s, q + 1) -- past ','
    if found and found[3] == ve then found[5] = q end
    prev_end = ve
  end
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
          local from, to = m[1], m[3]
          if m[4] then from = m[4] elseif m[5] then to = m[5] end
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
        return splice(s, m[2], m[3], build(segs, i + 1, val))
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

local ok, result = pcall(function()
  validate(stored)
  local s = stored
  for i = 2, #ARGV, 2 do
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
    elseif sub(result, 1, #BAD_ARG) == BAD_ARG then
      return redis.error_reply('ERR_INVALID_ARG ' .. sub(result, #BAD_ARG + 1))
    end
  end
  error(result, 0)
end

redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return 1
