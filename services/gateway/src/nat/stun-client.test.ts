import assert from 'node:assert/strict'
import { createSocket, type Socket } from 'node:dgram'
import { once } from 'node:events'
import { after, describe, it } from 'node:test'
import { decodeStunMessage, encodeBindingSuccess, type StunAddress } from '@stargate/shared/stun'
import { probeObservers } from './stun-client.ts'

/** A loopback UDP responder; `answer` decides what (if anything) each request gets back. */
async function responder(answer: (from: StunAddress, n: number) => 'mapped' | 'garbage' | 'wrong-txid' | 'silent' | StunAddress) {
  const socket: Socket = createSocket('udp4')
  let requests = 0
  socket.on('message', (buf, rinfo) => {
    const req = decodeStunMessage(buf)
    if (req == null) return
    const a = answer({ address: rinfo.address, port: rinfo.port }, ++requests)
    if (a === 'silent') return
    if (a === 'garbage') socket.send(Buffer.from('not stun at all'), rinfo.port, rinfo.address)
    else if (a === 'wrong-txid')
      socket.send(encodeBindingSuccess(new Uint8Array(12), { address: '1.2.3.4', port: 1 }), rinfo.port, rinfo.address)
    else
      socket.send(
        encodeBindingSuccess(req.transactionId, a === 'mapped' ? { address: rinfo.address, port: rinfo.port } : a),
        rinfo.port,
        rinfo.address,
      )
  })
  socket.bind(0, '127.0.0.1')
  await once(socket, 'listening')
  return { socket, port: socket.address().port, requests: () => requests }
}

describe('stun client', () => {
  const servers: Socket[] = []
  after(() => {
    for (const s of servers) s.close()
  })

  it('stun client - probes every observer from one local socket', async () => {
    const a = await responder(() => 'mapped')
    const b = await responder(() => 'mapped')
    servers.push(a.socket, b.socket)
    const r = await probeObservers(
      [
        { host: '127.0.0.1', port: a.port },
        { host: '127.0.0.1', port: b.port },
      ],
      { timeoutMs: 2000, retransmitMs: 100 },
    )
    assert.equal(r.observations.length, 2)
    for (const o of r.observations) assert.deepEqual(o.mapped, { address: '127.0.0.1', port: r.localPort })
  })

  it('stun client - retransmits to a slow observer and ignores garbage and foreign transactions', async () => {
    // Answers only the third copy of the request, after garbage and a response to another transaction.
    const slow = await responder((_from, n) => (n === 1 ? 'garbage' : n === 2 ? 'wrong-txid' : { address: '198.18.1.1', port: 777 }))
    servers.push(slow.socket)
    const r = await probeObservers([{ host: '127.0.0.1', port: slow.port }], { timeoutMs: 3000, retransmitMs: 50 })
    assert.deepEqual(r.observations[0]!.mapped, { address: '198.18.1.1', port: 777 })
    assert.ok(slow.requests() >= 3)
  })

  it('stun client - a silent observer times out without a mapping', async () => {
    const silent = await responder(() => 'silent')
    const ok = await responder(() => 'mapped')
    servers.push(silent.socket, ok.socket)
    const started = Date.now()
    const r = await probeObservers(
      [
        { host: '127.0.0.1', port: silent.port },
        { host: '127.0.0.1', port: ok.port },
      ],
      { timeoutMs: 400, retransmitMs: 50 },
    )
    const elapsed = Date.now() - started
    assert.equal(r.observations[0]!.mapped, undefined)
    assert.ok(r.observations[1]!.mapped != null)
    assert.ok(elapsed >= 380 && elapsed < 2000, `took ${elapsed} ms`)
    // Sent at 0, 50, 150 and 350 ms (the last may still be in flight when the probe gives up).
    assert.ok(silent.requests() >= 3 && silent.requests() <= 4, `${silent.requests()} requests`)
  })

  it('stun client - an abort ends the probe at once', async () => {
    const silent = await responder(() => 'silent')
    servers.push(silent.socket)
    const ac = new AbortController()
    const started = Date.now()
    const probing = probeObservers([{ host: '127.0.0.1', port: silent.port }], { timeoutMs: 10_000, retransmitMs: 50, signal: ac.signal })
    ac.abort()
    const r = await probing
    assert.equal(r.observations[0]!.mapped, undefined)
    assert.ok(Date.now() - started < 2_000)
  })
})
