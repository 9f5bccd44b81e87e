// A TCP proxy on a free loopback port in front of a server, for the timing
// tests: what the client sends goes through at once; what the server answers
// is held for `delayMs` (changeable at any time), in order. `sent` collects
// what clients sent (as latin1 text) when it is an array, and `sentAt` when
// (Date.now()); `rewrite` changes what the server answers.
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
    /** @type {number[] | null} */
    sentAt: null,
    /** @type {(data: Buffer) => Buffer} */
    rewrite: (data) => data,
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
    /** @type {{due: number, data: Buffer}[]} */
    const queue = []
    let timer = null
    const pump = () => {
      timer = null
      while (queue.length > 0 && queue[0].due <= Date.now()) {
        const { data } = /** @type {{data: Buffer}} */ (queue.shift())
        if (client.writable) client.write(data)
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0].due - Date.now())
    }
    client.on('data', (d) => {
      proxy.sent?.push(d.toString('latin1'))
      proxy.sentAt?.push(Date.now())
      upstream.write(d)
    })
    upstream.on('data', (data) => {
      const due = Math.max(Date.now() + proxy.delayMs, queue.at(-1)?.due ?? 0)
      queue.push({ due, data: proxy.rewrite(data) })
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
