import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { NatType } from '@stargate/shared/gen/gateway'
import { classifyNat, isPublicIp, type NatObservation } from './classify.ts'

const obs = (observer: string, mapped?: string): NatObservation => {
  if (mapped == null) return { observer }
  const i = mapped.lastIndexOf(':')
  return { observer, mapped: { address: mapped.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(mapped.slice(i + 1)) } }
}
const A = '198.18.0.10:3478'
const B = '198.18.0.11:3478'

describe('nat classification', () => {
  it('nat classify - mapping equal to a local public address is PUBLIC', () => {
    const r = classifyNat([obs(A, '198.18.0.5:40000'), obs(B, '198.18.0.5:40000')], ['127.0.0.1', '198.18.0.5'])
    assert.deepEqual(r, { natType: NatType.PUBLIC, publicAddrs: ['198.18.0.5:40000'], requiresRelay: false })
  })

  it('nat classify - one mapping for every observer behind a NAT is PRIVATE', () => {
    const r = classifyNat([obs(A, '198.18.1.1:40000'), obs(B, '198.18.1.1:40000')], ['127.0.0.1', '100.64.1.2'])
    assert.deepEqual(r, { natType: NatType.PRIVATE, publicAddrs: ['198.18.1.1:40000'], requiresRelay: false })
  })

  it('nat classify - mapping that differs by destination is SYMMETRIC and requires a relay', () => {
    const r = classifyNat([obs(A, '198.18.1.1:1234'), obs(B, '198.18.1.1:5678')], ['100.64.1.2'])
    assert.deepEqual(r, { natType: NatType.SYMMETRIC, publicAddrs: ['198.18.1.1:1234', '198.18.1.1:5678'], requiresRelay: true })
    const ipDiffers = classifyNat([obs(A, '198.18.1.1:1234'), obs(B, '198.18.1.2:1234')], ['100.64.1.2'])
    assert.equal(ipDiffers.natType, NatType.SYMMETRIC)
  })

  it('nat classify - fewer than two answers is UNKNOWN', () => {
    assert.equal(classifyNat([], ['198.18.0.5']).natType, NatType.UNKNOWN)
    assert.equal(classifyNat([obs(A), obs(B)], ['198.18.0.5']).natType, NatType.UNKNOWN)
    const one = classifyNat([obs(A, '198.18.0.5:1'), obs(B)], ['198.18.0.5'])
    assert.deepEqual(one, { natType: NatType.UNKNOWN, publicAddrs: ['198.18.0.5:1'], requiresRelay: false })
  })

  it('nat classify - a local carrier-grade NAT address is not PUBLIC', () => {
    // The host has 100.64.1.2 and the observers see it: they sit inside the same CGNAT, not on the internet.
    const r = classifyNat([obs(A, '100.64.1.2:40000'), obs(B, '100.64.1.2:40000')], ['100.64.1.2'])
    assert.equal(r.natType, NatType.PRIVATE)
    const rfc1918 = classifyNat([obs(A, '192.168.1.2:1'), obs(B, '192.168.1.2:1')], ['192.168.1.2'])
    assert.equal(rfc1918.natType, NatType.PRIVATE)
  })

  it('nat classify - same-network observers are left out when outside observers answered', () => {
    const lan = obs('100.64.1.1:3478', '100.64.1.2:40000')
    const sym = classifyNat([lan, obs(A, '198.18.1.1:1'), obs(B, '198.18.1.1:2')], ['100.64.1.2'])
    assert.equal(sym.natType, NatType.SYMMETRIC)
    const priv = classifyNat([lan, obs(A, '198.18.1.1:1'), obs(B, '198.18.1.1:1')], ['100.64.1.2'])
    assert.equal(priv.natType, NatType.PRIVATE)
    const oneOutside = classifyNat([lan, obs(A, '198.18.1.1:1')], ['100.64.1.2'])
    assert.equal(oneOutside.natType, NatType.UNKNOWN)
  })

  it('nat classify - IPv6 public and mapped addresses', () => {
    const r = classifyNat([obs(A, '[2001:db8::5]:7'), obs(B, '[2001:db8::5]:7')], ['2001:db8::5'])
    assert.deepEqual(r, { natType: NatType.PUBLIC, publicAddrs: ['[2001:db8::5]:7'], requiresRelay: false })
  })

  it('nat classify - public address ranges', () => {
    for (const ip of ['198.18.0.1', '198.19.255.1', '8.8.8.8', '100.63.255.255', '100.128.0.0', '2001:db8::1', '::ffff:8.8.8.8']) {
      assert.equal(isPublicIp(ip), true, ip)
    }
    for (const ip of [
      '100.64.0.1',
      '100.127.255.254',
      '10.1.2.3',
      '172.16.0.1',
      '172.31.255.1',
      '192.168.0.1',
      '127.0.0.1',
      '169.254.1.1',
    ]) {
      assert.equal(isPublicIp(ip), false, ip)
    }
    for (const ip of ['::1', 'fe80::1', 'fd00::1', '::ffff:100.64.0.1', 'not-an-ip', '224.0.0.1']) assert.equal(isPublicIp(ip), false, ip)
  })
})
