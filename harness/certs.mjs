// A throwaway CA and certificates made with openssl, for the TLS tests.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

/** A folder of certificates; `remove()` deletes it. */
export function certificates() {
  const dir = mkdtempSync(path.join(tmpdir(), 'rsr-tls-'))
  const file = (name) => path.join(dir, name)
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  return {
    file,
    pem: (name) => readFileSync(file(name), 'utf8'),
    /** A CA (key + self-signed cert) named `name`. */
    makeCa(name) {
      openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
        '-keyout', file(`${name}.key`), '-out', file(`${name}.crt`))
    },
    /** A certificate for `cn` signed by `ca`, valid for 127.0.0.1 and localhost. */
    makeCert(name, ca, cn, usage) {
      writeFileSync(file(`${name}.ext`), `subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=${usage}\n`)
      openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`))
      openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${ca}.crt`), '-CAkey', file(`${ca}.key`),
        '-CAcreateserial', '-days', '2', '-extfile', file(`${name}.ext`), '-out', file(`${name}.crt`))
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}
