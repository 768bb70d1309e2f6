import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ipKey } from './ip-key.ts'

describe('ip-key', () => {
  it('ip-key - IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4', () => {
    assert.equal(ipKey('198.51.100.7'), '198.51.100.7')
    assert.equal(ipKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
    assert.equal(ipKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64')
    assert.equal(ipKey('2001:db8::1'), '2001:db8:0:0::/64')
    assert.equal(ipKey('::1'), '0:0:0:0::/64')
    assert.equal(ipKey('::ffff:192.0.2.1'), '192.0.2.1')
    assert.equal(ipKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64')
    assert.notEqual(ipKey('2001:db8:1:2::1'), ipKey('2001:db8:1:3::1'))
  })
})
