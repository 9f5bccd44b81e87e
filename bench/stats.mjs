// Medians and spreads of repeated runs, for the benchmark reports.

/** @param {number[]} xs */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Lowest and highest. @param {number[]} xs @returns {[number, number]} */
export function spread(xs) {
  return [Math.min(...xs), Math.max(...xs)]
}
