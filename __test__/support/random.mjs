// Seeded randomness for the fuzz tests (mulberry32): a run is repeated by
// giving its seed again.

/** A generator of numbers in [0, 1) from `seed`, with `int(n)` and `pick(array)`. */
export function seeded(seed) {
  let a = seed >>> 0
  const rnd = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (/** @type {number} */ n) => Math.floor(rnd() * n)
  const pick = (/** @type {any[]} */ a) => a[int(a.length)]
  return { rnd, int, pick }
}
