import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { MultiaddrConnection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { type AdmittingConnectionManager, installAdmission } from './admission.ts'
import type { RefusalReasonName } from './stats.ts'

function maConn(ip: string): MultiaddrConnection {
  return { remoteAddr: multiaddr(`/ip4/${ip}/tcp/1234`) } as MultiaddrConnection
}

describe('admission', () => {
  it('admission - refuses over the per-IP connection rate and counts libp2p refusals as CONNECTION_LIMIT', () => {
    let libp2pAccepts = true
    let asked = 0
    const cm: AdmittingConnectionManager = {
      acceptIncomingConnection: () => {
        asked++
        return libp2pAccepts
      },
      getConnections: () => [],
    }
    const refused: RefusalReasonName[] = []
    let closing = false
    installAdmission(cm, {
      maxConnections: 10,
      maxConnectionsPerIpPerSecond: 2,
      closing: () => closing,
      refuse: (reason) => refused.push(reason),
    })
    assert.deepEqual(
      ['1.1.1.1', '1.1.1.1', '1.1.1.1', '2.2.2.2'].map((ip) => cm.acceptIncomingConnection(maConn(ip))),
      [true, true, false, true],
    )
    assert.deepEqual(refused, ['RATE_LIMITED'])
    assert.equal(asked, 3, 'rate-limited connections never reach libp2p')
    libp2pAccepts = false
    assert.equal(cm.acceptIncomingConnection(maConn('3.3.3.3')), false)
    assert.deepEqual(refused, ['RATE_LIMITED', 'CONNECTION_LIMIT'])
    closing = true
    libp2pAccepts = true
    assert.equal(cm.acceptIncomingConnection(maConn('4.4.4.4')), false, 'no new connections while draining')
    assert.equal(refused.length, 2)
  })
})
