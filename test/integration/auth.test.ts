import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { connect as connectTls } from 'node:tls'
import { promisify } from 'node:util'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import { GatewayService } from '@stargate/shared/gen/gateway'
import { type GatewayHandle, Harness } from '../lib/harness.ts'
import { tool } from '../lib/tools.ts'

const run = promisify(execFile)

const TOKEN = 'file-token-3f9c2a'
const ENV_TOKEN = 'env-token-81b7d0'

/** Runs grpcurl; resolves to { ok, out } (stdout + stderr) instead of throwing on a non-zero exit. */
async function grpcurl(args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    // A refused handshake makes grpcurl retry until its connect timeout: keep that short.
    const { stdout, stderr } = await run(tool('grpcurl'), ['-connect-timeout', '2', '-max-time', '10', ...args], { timeout: 20_000 })
    return { ok: true, out: stdout + stderr }
  } catch (err: unknown) {
    const e = err as { stdout?: string; stderr?: string; message: string }
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}` }
  }
}

async function openssl(dir: string, ...args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir, timeout: 30_000 })
}

/** A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, all P-256. */
async function makePki(dir: string): Promise<void> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Stargate Test CA')
  // A self-signed client certificate from outside the CA, which mTLS must refuse.
  await openssl(dir, 'req', '-x509', ...ec, '-keyout', 'rogue.key', '-out', 'rogue.pem', '-days', '2', '-subj', '/CN=rogue')
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  await writeFile(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n')
  for (const name of ['server', 'client']) {
    await openssl(dir, 'req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=stargate-${name}`)
    await openssl(
      dir,
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    )
  }
}

/**
 * Connects with TLS (trusting the test CA), sends the HTTP/2 preface and reports whether the server
 * answered (an accepted h2 connection sends SETTINGS at once) or the error its TLS alert caused.
 */
async function tlsProbe(hostPort: string, client: { cert?: Buffer; key?: Buffer }): Promise<{ answered: boolean; error: string }> {
  const [host, port] = hostPort.split(':') as [string, string]
  const ca = await readFile(join(pki, 'ca.pem'))
  return new Promise((resolve) => {
    let answered = false
    let error = ''
    const socket = connectTls({ host, port: Number(port), ca, ALPNProtocols: ['h2'], ...client })
    socket.on('error', (err) => {
      error = `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`
    })
    socket.on('close', () => resolve({ answered, error }))
    // With TLS 1.3 the server checks the client certificate after the client finished: write, then read.
    socket.on('secureConnect', () => socket.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'))
    socket.on('data', () => {
      answered = true
      socket.destroy()
    })
    socket.setTimeout(5_000, () => socket.destroy())
  })
}

function expectUnauthenticated(err: unknown): true {
  assert.ok(err instanceof ConnectError, `expected ConnectError, got ${String(err)}`)
  assert.equal(err.code, Code.Unauthenticated, err.message)
  return true
}

let pki: string

describe('auth', () => {
  const h = new Harness()
  let authed: GatewayHandle
  let closedHealth: GatewayHandle
  let tls: GatewayHandle
  let mtls: GatewayHandle

  before(async () => {
    pki = await mkdtemp(join(tmpdir(), 'stargate-pki-'))
    await makePki(pki)
    const tokenFile = join(pki, 'tokens')
    await writeFile(tokenFile, `# API tokens\n${TOKEN}\n\n`)
    ;[authed, closedHealth, tls, mtls] = await Promise.all([
      h.gateway(['--auth-token-file', tokenFile], { name: 'gw-auth', env: { STARGATE_AUTH_TOKENS: ENV_TOKEN } }),
      h.gateway(['--auth-token-file', tokenFile, '--auth-health-open', 'false'], { name: 'gw-auth-health-closed' }),
      h.gateway(['--tls-cert', join(pki, 'server.pem'), '--tls-key', join(pki, 'server.key'), '--auth-token-file', tokenFile], {
        name: 'gw-tls',
      }),
      h.gateway(['--tls-cert', join(pki, 'server.pem'), '--tls-key', join(pki, 'server.key'), '--tls-client-ca', join(pki, 'ca.pem')], {
        name: 'gw-mtls',
      }),
    ])
  })
  after(async () => {
    await h.close()
    if (pki != null) await rm(pki, { recursive: true, force: true })
  })

  it('auth - a call without a token is UNAUTHENTICATED with an actionable message', async () => {
    await assert.rejects(authed.client.getStatus({}), (err: unknown) => {
      expectUnauthenticated(err)
      assert.match((err as ConnectError).rawMessage, /authorization: Bearer/)
      return true
    })
  })

  it('auth - a wrong token is UNAUTHENTICATED', async () => {
    await assert.rejects(authed.client.getStatus({}, { headers: { authorization: `Bearer ${TOKEN}x` } }), expectUnauthenticated)
    await assert.rejects(authed.client.getStatus({}, { headers: { authorization: TOKEN } }), expectUnauthenticated)
  })

  it('auth - the right token (from the file or STARGATE_AUTH_TOKENS) works over gRPC', async () => {
    for (const token of [TOKEN, ENV_TOKEN]) {
      const status = await authed.client.getStatus({}, { headers: { authorization: `Bearer ${token}` } })
      assert.equal(status.peerId, authed.peerId)
    }
  })

  it('auth - Connect (HTTP/1.1 JSON) needs the token too', async () => {
    const url = `http://${authed.api}/stargate.v1.GatewayService/GetStatus`
    const post = (headers: Record<string, string>): Promise<Response> =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' })
    const denied = await post({})
    assert.equal(denied.status, 401)
    assert.equal(((await denied.json()) as { code: string }).code, 'unauthenticated')
    const ok = await post({ authorization: `Bearer ${TOKEN}` })
    assert.equal(ok.status, 200)
    assert.equal(((await ok.json()) as { peerId: string }).peerId, authed.peerId)
  })

  it('auth - grpcurl: health answers without a token, service calls need one', async () => {
    const health = await grpcurl(['-plaintext', authed.api, 'grpc.health.v1.Health/Check'])
    assert.ok(health.ok, health.out)
    assert.match(health.out, /SERVING/)
    const denied = await grpcurl(['-plaintext', authed.api, 'stargate.v1.GatewayService/GetStatus'])
    assert.equal(denied.ok, false)
    assert.match(denied.out, /Unauthenticated/)
    const allowed = await grpcurl([
      '-plaintext',
      '-H',
      `authorization: Bearer ${TOKEN}`,
      authed.api,
      'stargate.v1.GatewayService/GetStatus',
    ])
    assert.ok(allowed.ok, allowed.out)
    assert.ok(allowed.out.includes(authed.peerId), allowed.out)
    // Reflection only describes the public schema and stays open.
    const listed = await grpcurl(['-plaintext', authed.api, 'list'])
    assert.ok(listed.ok, listed.out)
    assert.match(listed.out, /stargate\.v1\.GatewayService/)
  })

  it('auth - with --auth-health-open false, health needs the token too', async () => {
    const denied = await grpcurl(['-plaintext', closedHealth.api, 'grpc.health.v1.Health/Check'])
    assert.equal(denied.ok, false)
    assert.match(denied.out, /Unauthenticated/)
    const allowed = await grpcurl(['-plaintext', '-H', `authorization: Bearer ${TOKEN}`, closedHealth.api, 'grpc.health.v1.Health/Check'])
    assert.ok(allowed.ok, allowed.out)
    assert.match(allowed.out, /SERVING/)
  })

  it('tls - a key that does not match the certificate stops start-up with a message naming the flags', async () => {
    const proc = await h.spawnCli('gw-bad-tls', [
      'gateway',
      '--listen',
      '127.0.0.1:0',
      '--identity',
      join(pki, 'bad.key'),
      '--tls-cert',
      join(pki, 'server.pem'),
      '--tls-key',
      join(pki, 'client.key'),
    ])
    assert.equal(await proc.exited, 1)
    assert.match(proc.stderr.join('\n'), /invalid TLS files \(--tls-cert, --tls-key/)
  })

  it('tls - grpcurl with the CA certificate reaches the API, plaintext does not', async () => {
    const ca = join(pki, 'ca.pem')
    const health = await grpcurl(['-cacert', ca, tls.api, 'grpc.health.v1.Health/Check'])
    assert.ok(health.ok, health.out)
    assert.match(health.out, /SERVING/)
    const status = await grpcurl(['-cacert', ca, '-H', `authorization: Bearer ${TOKEN}`, tls.api, 'stargate.v1.GatewayService/GetStatus'])
    assert.ok(status.ok, status.out)
    assert.ok(status.out.includes(tls.peerId), status.out)
    // Without trusting the CA the handshake fails; plaintext is not served on a TLS port.
    const untrusted = await grpcurl([tls.api, 'grpc.health.v1.Health/Check'])
    assert.equal(untrusted.ok, false)
    const plain = await grpcurl(['-plaintext', tls.api, 'grpc.health.v1.Health/Check'])
    assert.equal(plain.ok, false)
    assert.match(untrusted.out, /unknown authority/)
  })

  it('tls - Connect over HTTPS (HTTP/1.1) and gRPC over HTTP/2 from connect-node', async () => {
    const ca = await readFile(join(pki, 'ca.pem'))
    const headers = { authorization: `Bearer ${TOKEN}` }
    const connect = createClient(
      GatewayService,
      createConnectTransport({ baseUrl: `https://${tls.api}`, httpVersion: '1.1', nodeOptions: { ca } }),
    )
    assert.equal((await connect.getStatus({}, { headers })).peerId, tls.peerId)
    const grpc = createClient(GatewayService, createGrpcTransport({ baseUrl: `https://${tls.api}`, nodeOptions: { ca } }))
    assert.equal((await grpc.getStatus({}, { headers })).peerId, tls.peerId)
    await assert.rejects(grpc.getStatus({}), expectUnauthenticated)
  })

  it('tls - Connect and gRPC-Web over HTTP/2 (ALPN h2, as browsers negotiate it), with the token', async () => {
    const ca = await readFile(join(pki, 'ca.pem'))
    const headers = { authorization: `Bearer ${TOKEN}` }
    for (const transport of [
      createConnectTransport({ baseUrl: `https://${tls.api}`, httpVersion: '2', nodeOptions: { ca } }),
      createGrpcWebTransport({ baseUrl: `https://${tls.api}`, httpVersion: '2', nodeOptions: { ca } }),
    ]) {
      const client = createClient(GatewayService, transport)
      assert.equal((await client.getStatus({}, { headers })).peerId, tls.peerId)
      await assert.rejects(client.getStatus({}), expectUnauthenticated)
    }
    // The connection really is HTTP/2 over TLS: ALPN picked h2.
    const alpn = await new Promise<string | false>((resolve, reject) => {
      const [host, port] = tls.api.split(':') as [string, string]
      const socket = connectTls({ host, port: Number(port), ca, ALPNProtocols: ['h2'] }, () => {
        resolve(socket.alpnProtocol ?? false)
        socket.destroy()
      })
      socket.on('error', reject)
    })
    assert.equal(alpn, 'h2')
  })

  it('mtls - a client without a certificate is refused, one with a CA-signed certificate gets in', async () => {
    const ca = join(pki, 'ca.pem')
    const without = await grpcurl(['-cacert', ca, mtls.api, 'stargate.v1.GatewayService/GetStatus'])
    assert.equal(without.ok, false, without.out)
    assert.doesNotMatch(without.out, new RegExp(mtls.peerId))
    const withCert = await grpcurl([
      '-cacert',
      ca,
      '-cert',
      join(pki, 'client.pem'),
      '-key',
      join(pki, 'client.key'),
      mtls.api,
      'stargate.v1.GatewayService/GetStatus',
    ])
    assert.ok(withCert.ok, withCert.out)
    assert.ok(withCert.out.includes(mtls.peerId), withCert.out)
    // A certificate that does not chain to the client CA is refused too.
    const wrongCert = await grpcurl([
      '-cacert',
      ca,
      '-cert',
      join(pki, 'rogue.pem'),
      '-key',
      join(pki, 'rogue.key'),
      mtls.api,
      'grpc.health.v1.Health/Check',
    ])
    assert.equal(wrongCert.ok, false, wrongCert.out)
    // grpcurl only reports a timeout; a raw TLS probe shows what the server did.
    const noCert = await tlsProbe(mtls.api, {})
    assert.equal(noCert.answered, false)
    assert.match(noCert.error, /certificate required/i)
    const rogue = await tlsProbe(mtls.api, { cert: await readFile(join(pki, 'rogue.pem')), key: await readFile(join(pki, 'rogue.key')) })
    assert.equal(rogue.answered, false, rogue.error)
    const good = await tlsProbe(mtls.api, { cert: await readFile(join(pki, 'client.pem')), key: await readFile(join(pki, 'client.key')) })
    assert.equal(good.answered, true, good.error)
  })
})
