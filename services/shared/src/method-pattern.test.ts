import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { anyMatches, methodName, parseMethodPattern } from './method-pattern.ts'

const matches = (pattern: string, method: string): boolean => parseMethodPattern(pattern).matches(method)

describe('method patterns', () => {
  it('pattern - "*" matches every method, a name only itself', () => {
    for (const m of ['ping', 'db.delete', '/pkg.Svc/Call', '']) assert.ok(matches('*', m), m)
    assert.ok(matches('db.delete', 'db.delete'))
    assert.ok(!matches('db.delete', 'db.deletex'))
    assert.ok(!matches('db.delete', 'db'))
    assert.ok(!matches('ping', 'pingx'))
  })

  it('pattern - "PREFIX.*" matches names under the prefix and a dot, at any depth, and nothing else', () => {
    assert.ok(matches('db.*', 'db.get'))
    assert.ok(matches('db.*', 'db.v1.get'))
    assert.ok(!matches('db.*', 'db'), 'the prefix alone')
    assert.ok(!matches('db.*', 'db.'.slice(0, 2)))
    assert.ok(!matches('db.*', 'dbx.get'), 'another name with the same letters')
    assert.ok(!matches('db.*', 'x.db.get'), 'the prefix elsewhere')
    assert.ok(matches('a.b.*', 'a.b.c'))
    assert.ok(!matches('a.b.*', 'a.bc'))
  })

  it('pattern - a tunnelled gRPC path is matched by its full method name', () => {
    assert.equal(methodName('/routeguide.RouteGuide/GetFeature'), 'routeguide.RouteGuide.GetFeature')
    assert.equal(methodName('db.get'), 'db.get')
    assert.ok(matches('routeguide.RouteGuide.*', '/routeguide.RouteGuide/GetFeature'))
    assert.ok(matches('routeguide.*', '/routeguide.RouteGuide/GetFeature'))
    assert.ok(matches('routeguide.RouteGuide.GetFeature', '/routeguide.RouteGuide/GetFeature'))
    assert.ok(matches('/routeguide.RouteGuide/GetFeature', '/routeguide.RouteGuide/GetFeature'))
    assert.ok(!matches('routeguide.RouteGuide.GetFeature', '/routeguide.RouteGuide/ListFeatures'))
    assert.ok(!matches('other.*', '/routeguide.RouteGuide/GetFeature'))
  })

  it('pattern - anything else is refused with a reason', () => {
    for (const bad of ['', 'a*', '*.x', 'a.*.b', 'a.**', '.*', 'a b', 'a,b', 'a=b']) {
      assert.throws(() => parseMethodPattern(bad), RangeError, bad)
    }
    assert.throws(() => parseMethodPattern('db*'), /only as the whole pattern or as a trailing/)
  })

  it('pattern - anyMatches is true when one pattern matches', () => {
    const ps = ['a.*', 'ping'].map(parseMethodPattern)
    assert.ok(anyMatches(ps, 'ping'))
    assert.ok(anyMatches(ps, 'a.x'))
    assert.ok(!anyMatches(ps, 'b.x'))
    assert.ok(!anyMatches([], 'ping'))
  })
})
