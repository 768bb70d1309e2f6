import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { once } from 'node:events'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '@stargate/shared/log'
import { parseFlags, UsageError } from '@stargate/shared/options'
import { decodeStunMessage, encodeBindingRequest, mappedAddressOf, newTransactionId, sameTransactionId } from '@stargate/shared/stun'
import { RELAY_FLAGS, relayConfigFromFlags } from './cli.ts'
import { RELAY_DEFAULTS } from './defaults.ts'
import { StunServer } from './stun.ts'

describe('relay stun responder', () => {
  const server = new StunServer({ host: '127.0.0.1', port: 0, log: createLogger('test', { level: 'silent' }) })
  let port = 0
  before(async () => {
    port = (await server.start()).port
  })
  after(() => server.stop())

  it('relay stun - answers a binding request with the source address', async () => {
    const client = createSocket('udp4')
    client.bind(0, '127.0.0.1')
    await once(client, 'listening')
    const localPort = client.address().port
    const txid = newTransactionId()
    const reply = once(client, 'message')
    client.send(encodeBindingRequest(txid), port, '127.0.0.1')
    const [buf] = (await reply) as [Buffer]
    client.close()
    const msg = decodeStunMessage(buf)!
    assert.ok(sameTransactionId(msg.transactionId, txid))
    assert.deepEqual(mappedAddressOf(msg), { address: '127.0.0.1', port: localPort })
  })

  it('relay stun - drops garbage and non-request messages without answering', async () => {
    const client = createSocket('udp4')
    client.bind(0, '127.0.0.1')
    await once(client, 'listening')
    const localPort = client.address().port
    const answers: Buffer[] = []
    client.on('message', (b) => answers.push(b))
    const droppedBefore = server.counters.dropped
    const answeredBefore = server.counters.answered
    const notRequest = encodeBindingRequest(newTransactionId())
    notRequest.writeUInt16BE(0x0111, 0) // a Binding Error Response
    const wrongCookie = encodeBindingRequest(newTransactionId())
    wrongCookie.writeUInt32BE(0, 4)
    for (const g of [Buffer.from('hello'), Buffer.alloc(20), wrongCookie, notRequest]) client.send(g, port, '127.0.0.1')
    // A valid request sent last: its answer proves the earlier datagrams were processed (UDP on loopback keeps order).
    const txid = newTransactionId()
    client.send(encodeBindingRequest(txid), port, '127.0.0.1')
    while (answers.length === 0) await once(client, 'message')
    client.close()
    assert.equal(answers.length, 1)
    const msg = decodeStunMessage(answers[0]!)!
    assert.ok(sameTransactionId(msg.transactionId, txid))
    assert.deepEqual(mappedAddressOf(msg), { address: '127.0.0.1', port: localPort })
    assert.equal(server.counters.dropped - droppedBefore, 4)
    assert.equal(server.counters.answered - answeredBefore, 1)
  })

  it('relay stun - --stun-port defaults to 3478, 0 picks a port, --no-stun turns it off', () => {
    const cfg = (argv: string[], env: NodeJS.ProcessEnv = {}) => relayConfigFromFlags(parseFlags(RELAY_FLAGS, argv, env)).stunPort
    assert.equal(cfg([]), RELAY_DEFAULTS.stunPort)
    assert.equal(RELAY_DEFAULTS.stunPort, 3478)
    assert.equal(cfg(['--stun-port', '0']), 0)
    assert.equal(cfg([], { STARGATE_STUN_PORT: '3479' }), 3479)
    assert.equal(cfg(['--no-stun']), undefined)
    assert.equal(cfg([], { STARGATE_NO_STUN: 'true' }), undefined)
    assert.throws(() => cfg(['--stun-port', '70000']), UsageError)
  })
})
