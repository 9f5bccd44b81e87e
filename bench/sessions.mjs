// Realistic sessions of about 1 KB and 32 KB: a user object, a cart array,
// flags, timestamps; in the large one the cart (about 30 KB) is stored before
// recentlyViewed, so a merge of data.recentlyViewed lands after it.

function cartItem(i) {
  return {
    sku: `SKU-${100000 + i}`,
    name: `Product number ${i} with a longer title`,
    qty: 1 + (i % 4),
    price: Math.round(((i * 7.31) % 200) * 100) / 100,
    addedAt: 1763812345678 + i * 1000,
    options: { color: ['red', 'green', 'blue'][i % 3], size: 'M', gift: i % 5 === 0 },
    url: `https://shop.example.com/p/${100000 + i}`,
  }
}

const cartLength = new Map()

/** A session whose JSON text is about `bytes` long. */
export function makeSession(id, bytes) {
  const s = {
    data: {
      user: { id: 48213, name: 'Ada Lovelace', email: 'ada@example.com', roles: ['customer'], locale: 'en-GB' },
      cart: [],
      recentlyViewed: [101, 102, 103],
      flags: { beta: true, newCheckout: false, consent: { analytics: true, marketing: false } },
      csrf: 'f3a9c2d1e8b7a6f5c4d3e2f1a0b9c8d7',
      lastSeenAt: 1763812345678,
    },
    meta: { id, createdAt: 1763812345678, expiresAt: 1763812345678 + 86_400_000 },
  }
  let n = cartLength.get(bytes)
  if (n === undefined) {
    for (n = 0; JSON.stringify(s).length < bytes; n++) s.data.cart.push(cartItem(n))
    cartLength.set(bytes, n)
  } else {
    for (let i = 0; i < n; i++) s.data.cart.push(cartItem(i))
  }
  return s
}

/** The two dirty paths of the merge cell. */
export function mergePaths(i) {
  return { 'data.user.name': `Ada ${i % 100}`, 'data.recentlyViewed': [i % 1000, 101, 102] }
}
