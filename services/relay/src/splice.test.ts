import assert from 'node:assert/strict'
import { once } from 'node:events'
import { describe, it } from 'node:test'
import type { Stream } from '@libp2p/interface'
import { mockMuxer, multiaddrConnectionPair, streamPair } from '@libp2p/utils'
import { CircuitEndError, splice } from './splice.ts'

/** Collects everything a stream receives until the remote closes its write side. */
function collect(s: Stream): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  s.addEventListener('message', (e) => chunks.push(e.data.subarray()))
  const all = (): Uint8Array => new Uint8Array(Buffer.concat(chunks))
  return new Promise((resolve, reject) => {
    s.addEventListener('remoteCloseWrite', () => resolve(all()))
    s.addEventListener('close', (e) => (e.error != null ? reject(e.error) : resolve(all())))
  })
}

async function circuit(opts: { maxBytes?: number; maxDurationMs?: number; signal?: AbortSignal } = {}) {
  const [client, hop] = await streamPair()
  const [stop, server] = await streamPair()
  const counts = { fromInitiator: 0, toInitiator: 0 }
  const done = splice(hop, stop, {
    maxBytes: opts.maxBytes ?? 0,
    maxDurationMs: opts.maxDurationMs ?? 0,
    onBytes: (d, n) => {
      counts[d] += n
    },
    signal: opts.signal,
  })
  return { client, server, counts, done }
}

/**
 * A stream pair over a pair of in-memory connections; `kill()` kills the near peer's connection (as a killed
 * process does): the far end's connection closes under its stream with neither a stream reset nor a half-close.
 */
async function connectedPair(): Promise<{ near: Stream; far: Stream; kill(): void }> {
  const [nearConnection, farConnection] = multiaddrConnectionPair()
  const nearMuxer = mockMuxer().createStreamMuxer(nearConnection)
  const farMuxer = mockMuxer().createStreamMuxer(farConnection)
  const [[far], near] = await Promise.all([once(farMuxer, 'stream') as Promise<[CustomEvent<Stream>]>, nearMuxer.createStream()])
  return { near, far: far.detail, kill: () => nearConnection.abort(new Error('killed')) }
}

describe('splice', () => {
  it('splice - forwards both ways with half-close and counts bytes per direction', async () => {
    const { client, server, counts, done } = await circuit()
    const atServer = collect(server)
    const atClient = collect(client)
    const up = new Uint8Array(300_000).fill(1)
    const down = new Uint8Array(70_000).fill(2)
    client.send(up)
    await client.close()
    assert.deepEqual(await atServer, up)
    server.send(down)
    await server.close()
    assert.deepEqual(await atClient, down)
    assert.equal(await done, 'closed')
    assert.deepEqual(counts, { fromInitiator: 300_000, toInitiator: 70_000 })
  })

  it('splice - a reset on one side resets the other', async () => {
    const { client, server, done } = await circuit()
    const atServer = collect(server)
    client.abort(new Error('boom'))
    await assert.rejects(atServer)
    assert.equal(await done, 'reset')
  })

  it('splice - cuts the circuit past the data limit per direction', async () => {
    const { client, server, counts, done } = await circuit({ maxBytes: 1000 })
    const atServer = collect(server)
    client.send(new Uint8Array(600))
    client.send(new Uint8Array(600))
    await assert.rejects(atServer, /reset/)
    assert.equal(await done, 'data-limit')
    assert.equal(counts.fromInitiator, 600)
  })

  it('splice - cuts the circuit at the duration limit, and on shutdown', async () => {
    const started = Date.now()
    const a = await circuit({ maxDurationMs: 100 })
    assert.equal(await a.done, 'duration-limit')
    assert.ok(Date.now() - started >= 95)
    const ac = new AbortController()
    const b = await circuit({ signal: ac.signal })
    ac.abort()
    assert.equal(await b.done, 'shutdown')
  })

  it('splice - an abort with a CircuitEndError ends the circuit with its end and resets both sides', async () => {
    const ac = new AbortController()
    const { client, server, done } = await circuit({ signal: ac.signal })
    const atClient = collect(client)
    const atServer = collect(server)
    ac.abort(new CircuitEndError('replaced', 'the reservation was replaced'))
    assert.equal(await done, 'replaced')
    await assert.rejects(atClient)
    await assert.rejects(atServer)
  })

  it("splice - the target's connection vanishing (transport closed, no reset) ends the initiator's side at once", async () => {
    const [client, hop] = await streamPair()
    const holder = await connectedPair()
    const done = splice(hop, holder.far, { maxBytes: 0, maxDurationMs: 0, onBytes: () => {} })
    const atClient = collect(client)
    client.send(new Uint8Array(100))
    await once(holder.near, 'message')
    holder.kill()
    await assert.rejects(atClient, 'the initiator sees its relayed connection end (reset), not a silent stall')
    assert.equal(await done, 'target-gone')
  })

  it("splice - the initiator's connection vanishing ends the target's side at once", async () => {
    const initiator = await connectedPair()
    const [stop, server] = await streamPair()
    const done = splice(initiator.far, stop, { maxBytes: 0, maxDurationMs: 0, onBytes: () => {} })
    const atServer = collect(server)
    initiator.kill()
    await assert.rejects(atServer)
    assert.equal(await done, 'initiator-gone')
  })
})
