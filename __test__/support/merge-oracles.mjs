// Two independent statements of what merge must do, for the tests to compare
// the Lua script against.
//
// applyToValue: the semantics on parsed JSON, in plain JavaScript.
// applyToText:  the same on a tree that keeps every scalar's and key's raw text,
//               so the result is the exact text the merge must leave in Redis
//               (for stored text without white space).

const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k)
const define = (o, k, v) => Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true })

/** The index a segment names in an array, as JavaScript reads it; else undefined. */
export function arrayIndex(seg) {
  if (!/^(0|[1-9][0-9]*)$/.test(seg)) return undefined
  const n = Number(seg)
  return n < 4294967295 ? n : undefined
}

/** JSON text of a value as merge receives it; undefined means "remove". */
export function valueText(value) {
  return value === undefined ? undefined : JSON.stringify(value)
}

/** Applies paths to a parsed document (own properties only, no prototypes). */
export function applyToValue(doc, paths) {
  for (const [path, value] of Object.entries(paths)) {
    const text = valueText(value)
    const v = text === undefined ? undefined : JSON.parse(text)
    const segs = path.split('.')
    let node = doc
    let ignored = false
    for (let i = 0; i < segs.length - 1; i++) {
      const seg = segs[i]
      if (Array.isArray(node)) {
        const idx = arrayIndex(seg)
        if (idx === undefined) {
          ignored = true // a property on an array: JSON.stringify drops it
          break
        }
        let child = node[idx]
        if (child === null || typeof child !== 'object') {
          child = {}
          while (node.length < idx) node.push(null)
          node[idx] = child
        }
        node = child
      } else {
        let child = own(node, seg) ? node[seg] : undefined
        if (child === null || typeof child !== 'object') {
          child = {}
          define(node, seg, child)
        }
        node = child
      }
    }
    if (ignored) continue
    const last = segs[segs.length - 1]
    if (Array.isArray(node)) {
      const idx = arrayIndex(last)
      if (idx === undefined) continue
      if (v === undefined) {
        if (idx < node.length) node[idx] = null // a hole serialises as null
      } else {
        while (node.length < idx) node.push(null)
        node[idx] = v
      }
    } else if (v === undefined) {
      delete node[last]
    } else {
      define(node, last, v)
    }
  }
  return doc
}

// ---- raw-text tree -------------------------------------------------------

/** Parses JSON text into {t:'o', m:[{raw, key, v}]} | {t:'a', items} | {t:'s', raw}. */
export function parseRaw(text) {
  let p = 0
  const ws = () => {
    while (p < text.length && ' \t\r\n'.includes(text[p])) p++
  }
  const str = () => {
    const start = p++
    while (text[p] !== '"') p += text[p] === '\\' ? 2 : 1
    p++
    const raw = text.slice(start, p)
    return { raw, value: JSON.parse(raw) }
  }
  const value = () => {
    ws()
    const c = text[p]
    if (c === '{') {
      p++
      const m = []
      ws()
      if (text[p] === '}') {
        p++
        return { t: 'o', m }
      }
      for (;;) {
        ws()
        const k = str()
        ws()
        p++ // ':'
        m.push({ raw: k.raw, key: k.value, v: value() })
        ws()
        if (text[p++] === '}') return { t: 'o', m }
      }
    }
    if (c === '[') {
      p++
      const items = []
      ws()
      if (text[p] === ']') {
        p++
        return { t: 'a', items }
      }
      for (;;) {
        items.push(value())
        ws()
        if (text[p++] === ']') return { t: 'a', items }
      }
    }
    if (c === '"') return { t: 's', raw: str().raw }
    const start = p
    while (p < text.length && !',]} \t\r\n'.includes(text[p])) p++
    return { t: 's', raw: text.slice(start, p) }
  }
  return value()
}

export function serializeRaw(node) {
  if (node.t === 'o') return '{' + node.m.map((m) => m.raw + ':' + serializeRaw(m.v)).join(',') + '}'
  if (node.t === 'a') return '[' + node.items.map(serializeRaw).join(',') + ']'
  return node.raw
}

const NULL = () => ({ t: 's', raw: 'null' })
const isContainer = (n) => n !== undefined && (n.t === 'o' || n.t === 'a')

/** Applies paths to the raw tree: new keys go last, untouched text stays. */
export function applyToText(text, paths) {
  const root = parseRaw(text)
  for (const [path, value] of Object.entries(paths)) {
    const vt = valueText(value)
    const leaf = vt === undefined ? undefined : { t: 's', raw: vt }
    const segs = path.split('.')
    let node = root
    let ignored = false
    for (let i = 0; i < segs.length - 1 && !ignored; i++) {
      const seg = segs[i]
      if (node.t === 'a') {
        const idx = arrayIndex(seg)
        if (idx === undefined) {
          ignored = true
          break
        }
        if (!isContainer(node.items[idx])) {
          while (node.items.length < idx) node.items.push(NULL())
          node.items[idx] = { t: 'o', m: [] }
        }
        node = node.items[idx]
      } else {
        const matches = node.m.filter((m) => m.key === seg)
        let member = matches[matches.length - 1]
        if (!member) {
          member = { raw: JSON.stringify(seg), key: seg, v: { t: 'o', m: [] } }
          node.m.push(member)
        } else if (!isContainer(member.v)) {
          member.v = { t: 'o', m: [] }
        }
        node = member.v
      }
    }
    if (ignored) continue
    const last = segs[segs.length - 1]
    if (node.t === 'a') {
      const idx = arrayIndex(last)
      if (idx === undefined) continue
      if (leaf === undefined) {
        if (idx < node.items.length) node.items[idx] = NULL()
      } else {
        while (node.items.length < idx) node.items.push(NULL())
        node.items[idx] = leaf
      }
    } else if (leaf === undefined) {
      node.m = node.m.filter((m) => m.key !== last)
    } else {
      const matches = node.m.filter((m) => m.key === last)
      if (matches.length) matches[matches.length - 1].v = leaf
      else node.m.push({ raw: JSON.stringify(last), key: last, v: leaf })
    }
  }
  return serializeRaw(root)
}
