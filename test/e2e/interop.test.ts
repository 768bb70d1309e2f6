/**
 * Go and Python clients built from the generated stubs (test/interop) talk to real gateways:
 * a Serve handler in one language answers a Call made in the other, across gateway A → relay → gateway B.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { clientCall, clientServe, goClient, pythonBin } from '../interop/clients.ts'
import { type Stack, startStack } from '../interop/stack.ts'
import { Harness, type Proc } from '../lib/harness.ts'

describe('interop (Go and Python clients)', { timeout: 300_000 }, () => {
  const h = new Harness()
  let s: Stack
  let pyServe: Proc
  let goServe: Proc
  let nodeServe: Proc

  before(async () => {
    // Build the Go client and set up the Python venv while the stack starts.
    const [stack] = await Promise.all([startStack(h), goClient(), Promise.resolve(pythonBin())])
    s = stack
    pyServe = await clientServe(h, 'python', s.b.api, 'py')
    goServe = await clientServe(h, 'go', s.b.api, 'go')
    nodeServe = await h.serveClient(s.b.api, ['echo'])
  })
  after(async () => {
    await h.close()
  })

  it('serve - Go and Python Serve clients register and learn the gateway peer id', () => {
    assert.match(pyServe.stdout[0] ?? '', new RegExp(`^READY ${s.b.peerId} py\\.echo,py\\.fail$`))
    assert.match(goServe.stdout[0] ?? '', new RegExp(`^READY ${s.b.peerId} go\\.echo,go\\.fail$`))
  })

  it('go → python - a Go Call via gateway A reaches the Python handler on B through the relay', async () => {
    const payload = { hello: 'from go', n: 42, nested: { list: [1, 'two', true, null] } }
    const r = await clientCall('go', s.a.api, s.b.peerId, 'py.echo', { json: payload })
    assert.equal(r.exitCode, 0, r.stdout)
    assert.deepEqual(r.response?.json, payload)
    assert.equal(r.response?.tier, 'TIER_RELAY')
    assert.ok(
      pyServe.stdout.some((l) => l === `HANDLED py.echo TIER_RELAY ${s.a.peerId}`),
      pyServe.dump(),
    )
  })

  it('python → go - a Python Call via gateway A reaches the Go handler on B through the relay', async () => {
    const payload = { hello: 'from python', pi: 3.5, ok: false }
    const r = await clientCall('python', s.a.api, s.b.peerId, 'go.echo', { json: payload })
    assert.equal(r.exitCode, 0, r.stdout)
    assert.deepEqual(r.response?.json, payload)
    assert.equal(r.response?.tier, 'TIER_RELAY')
    assert.ok(
      goServe.stdout.some((l) => l === `HANDLED go.echo TIER_RELAY ${s.a.peerId}`),
      goServe.dump(),
    )
  })

  it('bytes - binary payloads cross Go → Python and Python → Go unchanged', async () => {
    const toPy = await clientCall('go', s.a.api, s.b.peerId, 'py.echo', { data: 'héllo bytes' })
    assert.equal(toPy.response?.data, Buffer.from('héllo bytes').toString('base64'))
    const toGo = await clientCall('python', s.a.api, s.b.peerId, 'go.echo', { data: 'bytes ✓' })
    assert.equal(toGo.response?.data, Buffer.from('bytes ✓').toString('base64'))
    assert.equal(toGo.response?.tier, 'TIER_RELAY')
  })

  it('python → node - a Python Call reaches the Node Serve client on B', async () => {
    const r = await clientCall('python', s.a.api, s.b.peerId, 'echo', { json: ['a', 1, { b: null }] })
    assert.equal(r.exitCode, 0, r.stdout)
    assert.deepEqual(r.response?.json, ['a', 1, { b: null }])
    assert.equal(r.response?.tier, 'TIER_RELAY')
    assert.ok(
      nodeServe.stdout.some((l) => l.startsWith(`HANDLED echo ${r.response?.request_id} `)),
      nodeServe.dump(),
    )
  })

  it('errors - a handler error code reaches the caller in the other language as that gRPC status', async () => {
    // NOT_FOUND (5) from Python, seen by Go as codes.NotFound.
    const fromPy = await clientCall('go', s.a.api, s.b.peerId, 'py.fail', { json: { code: 5 } })
    assert.equal(fromPy.exitCode, 1)
    assert.equal(fromPy.error?.code, 'NotFound')
    assert.match(fromPy.error?.message ?? '', /python handler failed on purpose \(code 5\)/)
    // PERMISSION_DENIED (7) from Go, seen by Python as StatusCode.PERMISSION_DENIED.
    const fromGo = await clientCall('python', s.a.api, s.b.peerId, 'go.fail', { json: { code: 7 } })
    assert.equal(fromGo.exitCode, 1)
    assert.equal(fromGo.error?.code, 'PERMISSION_DENIED')
    assert.match(fromGo.error?.message ?? '', /go handler failed on purpose \(PermissionDenied\)/)
  })

  it('errors - gateway-side statuses reach Go and Python clients (bad peer id, unserved method)', async () => {
    const bad = await clientCall('go', s.a.api, 'not-a-peer', 'ping', { json: 1 })
    assert.equal(bad.error?.code, 'InvalidArgument')
    const unserved = await clientCall('python', s.a.api, s.b.peerId, 'nobody.serves', { json: 1 })
    assert.equal(unserved.error?.code, 'UNIMPLEMENTED')
  })

  it('ping - the built-in ping answers Go and Python callers with the target peer id', async () => {
    for (const lang of ['go', 'python'] as const) {
      const r = await clientCall(lang, s.a.api, s.b.peerId, 'ping', { json: { from: lang } })
      const body = r.response?.json as { echo: unknown; peerId: string }
      assert.deepEqual(body.echo, { from: lang })
      assert.equal(body.peerId, s.b.peerId)
      assert.equal(r.response?.tier, 'TIER_RELAY')
    }
  })
})
