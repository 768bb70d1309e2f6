import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, StargateError } from '@stargate/shared/errors'
import { ExposeTable, parseExposeFlag } from './expose.ts'

describe('tunnel expose', () => {
  it('expose - parses SERVICE=HOST:PORT, * and the TLS form', () => {
    assert.deepEqual(parseExposeFlag('routeguide.RouteGuide=127.0.0.1:50051'), {
      service: 'routeguide.RouteGuide',
      target: { address: '127.0.0.1:50051', host: '127.0.0.1', port: 50051, tls: false, url: 'http://127.0.0.1:50051' },
    })
    assert.deepEqual(parseExposeFlag('*=localhost:9000').target.url, 'http://localhost:9000')
    assert.equal(parseExposeFlag('*=localhost:9000').service, '*')
    assert.deepEqual(parseExposeFlag('a.B=[::1]:443').target, {
      address: '[::1]:443',
      host: '::1',
      port: 443,
      tls: false,
      url: 'http://[::1]:443',
    })
    const tls = parseExposeFlag('Svc=https://backend.internal:8443')
    assert.equal(tls.target.tls, true)
    assert.equal(tls.target.url, 'https://backend.internal:8443')
    assert.equal(parseExposeFlag('Svc=http://h:1').target.tls, false)
  })

  it('expose - a malformed value is INVALID_ARGUMENT naming the flag and the expected form', () => {
    for (const bad of [
      'routeguide.RouteGuide',
      'a.B=host',
      'a.B=host:0',
      'a.B=host:70000',
      '1bad=h:1',
      'a..B=h:1',
      '=h:1',
      'a.B=',
      'a/B=h:1',
      'a.B=ftp://h:1',
    ]) {
      assert.throws(
        () => parseExposeFlag(bad),
        (err: unknown) =>
          err instanceof StargateError &&
          err.code === Code.InvalidArgument &&
          err.message.includes(`--expose ${JSON.stringify(bad)}`) &&
          err.message.includes('expected SERVICE=HOST:PORT'),
        bad,
      )
    }
  })

  it('expose - an exact service beats *, * serves the rest, nothing else is exposed', () => {
    const exact = new ExposeTable([parseExposeFlag('a.B=h1:1'), parseExposeFlag('*=h2:2')])
    assert.equal(exact.lookup('a.B')?.address, 'h1:1')
    assert.equal(exact.lookup('c.D')?.address, 'h2:2')
    assert.deepEqual(exact.services, ['a.B', '*'])
    const only = new ExposeTable([parseExposeFlag('a.B=h1:1')])
    assert.equal(only.lookup('c.D'), undefined)
    assert.equal(new ExposeTable([]).empty, true)
  })

  it('expose - a service given twice is refused naming both backends', () => {
    assert.throws(
      () => new ExposeTable([parseExposeFlag('a.B=h1:1'), parseExposeFlag('a.B=h2:2')]),
      /--expose a\.B is given twice \(h1:1 and h2:2\)/,
    )
    assert.throws(() => new ExposeTable([parseExposeFlag('*=h1:1'), parseExposeFlag('*=h2:2')]), /--expose \* is given twice/)
  })
})
