import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { circuitCandidates } from './relay.ts'

const R1 = '12D3KooWR1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
const R2 = '12D3KooWR2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'
const R3 = '12D3KooWR3cccccccccccccccccccccccccccccccccccccccccc'
const PEER = '12D3KooWTargetddddddddddddddddddddddddddddddddddddd'
const relay = (id: string, port: number) => ({ addr: `/ip4/198.18.0.${port}/tcp/4001/p2p/${id}`, peerId: id })

describe('relay selection', () => {
  it('relay selection - our usable relays first, in the order given (lowest RTT first), each as a circuit to the target', () => {
    const got = circuitCandidates(PEER, [relay(R2, 2), relay(R1, 1)], [])
    assert.deepEqual(got, [
      { addr: `/ip4/198.18.0.2/tcp/4001/p2p/${R2}/p2p-circuit/p2p/${PEER}`, relayPeerId: R2 },
      { addr: `/ip4/198.18.0.1/tcp/4001/p2p/${R1}/p2p-circuit/p2p/${PEER}`, relayPeerId: R1 },
    ])
  })

  it("relay selection - the target's announced circuits follow, one per relay, never duplicating one of ours", () => {
    const announced = [
      `/ip4/198.18.0.1/tcp/4001/p2p/${R1}/p2p-circuit/p2p/${PEER}`,
      `/ip4/198.18.0.3/tcp/4001/p2p/${R3}/p2p-circuit`,
      `/ip4/198.18.0.3/tcp/4001/p2p/${R3}/p2p-circuit/p2p/${PEER}`,
    ]
    const got = circuitCandidates(PEER, [relay(R1, 1)], announced)
    assert.deepEqual(
      got.map((c) => c.relayPeerId),
      [R1, R3],
    )
    assert.equal(got[1]?.addr, `/ip4/198.18.0.3/tcp/4001/p2p/${R3}/p2p-circuit/p2p/${PEER}`, 'the target is appended when missing')
  })

  it('relay selection - no usable relay and nothing announced: no candidate', () => {
    assert.deepEqual(circuitCandidates(PEER, [], []), [])
    assert.deepEqual(circuitCandidates(PEER, [], ['/ip4/1.2.3.4/tcp/1/p2p-circuit']), [], 'an announced address naming no relay is ignored')
  })
})
