// A TCP proxy on a free loopback port in front of a server, for the timing
// tests: what the client sends goes through at once, unless `holdSent` says
// to hold a chunk for some ms, or until a Promise it returns settles (it and
// what follows it stay in order); what
// the server answers is held for `delayMs` (changeable at any time), in
// order. `sent` collects what clients sent (as latin1 text) when it is an
// array, and `flow` the order of what passed ('sent' for a chunk a client
// sent, 'answered' for one handed back to it); `rewrite` changes what the
// server answers; `heldSent` counts the chunks held that have gone through
// since.
import net from 'node:net'

/** @param {number} upstreamPort */
export function startProxy(upstreamPort) {
  const sockets = new Set()
  const proxy = {
    port: 0,
    url: '',
    delayMs: 0,
    /** @type {string[] | null} */
    sent: null,
    /** @type {('sent' | 'answered')[] | null} */
    flow: null,
    /** @type {(data: Buffer) => Buffer} */
    rewrite: (data) => data,
    /** Ms to hold a chunk the client sent (0: none), or a Promise it waits for. @type {(data: Buffer) => number | Promise<unknown>} */
    holdSent: (_data) => 0,
    /** A Promise a chunk the server sent waits for (and what follows it on that connection), or null. @type {(data: Buffer) => Promise<unknown> | null} */
    holdAnswered: (_data) => null,
    heldSent: 0,
    /** Breaks every connection through the proxy (it goes on listening). */
    dropConnections() {
      for (const s of sockets) s.destroy()
      sockets.clear()
    },
    async stop() {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort })
    sockets.add(client).add(upstream)
    // One queue and one timer per connection: chunks leave in the order they
    // came, each no earlier than its due time (timers alone may reorder them).
    /** @type {{due: number, data: Buffer, gated?: boolean}[]} */
    const queue = []
    let timer = null
    const pump = () => {
      if (timer !== null) clearTimeout(timer)
      timer = null
      while (queue.length > 0 && !queue[0].gated && queue[0].due <= Date.now()) {
        const { data } = /** @type {{data: Buffer}} */ (queue.shift())
        if (client.writable) client.write(data)
        proxy.flow?.push('answered')
      }
      if (queue.length > 0 && !queue[0].gated) timer = setTimeout(pump, queue[0].due - Date.now())
    }
    /**
     * What the client sent that waits behind a held chunk; a gated one waits
     * for its Promise, whatever its due time.
     * @type {{due: number, data: Buffer, held: boolean, gated: boolean}[]}
     */
    const outbox = []
    let outTimer = null
    const pumpOut = () => {
      if (outTimer !== null) clearTimeout(outTimer)
      outTimer = null
      while (outbox.length > 0 && !outbox[0].gated && outbox[0].due <= Date.now()) {
        const { data, held } = /** @type {{data: Buffer, held: boolean}} */ (outbox.shift())
        if (upstream.writable) upstream.write(data)
        if (held) proxy.heldSent++
      }
      if (outbox.length > 0 && !outbox[0].gated) outTimer = setTimeout(pumpOut, outbox[0].due - Date.now())
    }
    client.on('data', (d) => {
      proxy.sent?.push(d.toString('latin1'))
      proxy.flow?.push('sent')
      const hold = proxy.holdSent(d)
      if (hold === 0 && outbox.length === 0) return upstream.write(d)
      if (typeof hold !== 'number') {
        const entry = { due: Date.now(), data: d, held: true, gated: true }
        outbox.push(entry)
        hold.finally(() => {
          entry.gated = false
          pumpOut()
        })
        return
      }
      const due = Math.max(Date.now() + hold, outbox.at(-1)?.due ?? 0)
      outbox.push({ due, data: d, held: hold > 0, gated: false })
      if (outTimer === null) pumpOut()
    })
    upstream.on('data', (data) => {
      const due = Math.max(Date.now() + proxy.delayMs, queue.at(-1)?.due ?? 0)
      const gate = proxy.holdAnswered(data)
      const entry = { due, data: proxy.rewrite(data), gated: gate !== null }
      queue.push(entry)
      gate?.finally(() => {
        entry.gated = false
        pump()
      })
      if (timer === null) pump()
    })
    const end = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      proxy.port = /** @type {net.AddressInfo} */ (server.address()).port
      proxy.url = `redis://127.0.0.1:${proxy.port}`
      resolve(proxy)
    })
  })
}
