import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { Code, StargateError } from '@stargate/shared/errors'
import { CallerPolicy, parseAllowCaller, parseCallerPolicy } from './policy.ts'

const SELF = '12D3KooWAsAPp7rdQz3GToEY7NiSHdi1Dd7MoiVs9654gNovUfyH'
const ALICE = '12D3KooWDqp2KdgQ37XXGc9taNbYe85yYnpFu8FTHEjPLkwCLpyg'
const MALLORY = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'

const dir = mkdtempSync(join(tmpdir(), 'stargate-policy-'))
after(() => rmSync(dir, { recursive: true, force: true }))

function policy(allowCallers: string[], file?: string): CallerPolicy {
  return new CallerPolicy({ selfPeerId: SELF, allowCallers, file })
}

describe('caller policy', () => {
  it('policy - no rule is OPEN: every caller may call everything', () => {
    const p = policy([])
    assert.equal(p.mode, 'open')
    assert.equal(p.ruleCount, 0)
    assert.ok(p.allows(MALLORY, 'db.delete').allowed)
    assert.ok(p.allows(MALLORY, '/pkg.Svc/M').allowed)
  })

  it('policy - with rules, only what a rule allows; the denial names the caller, the method and the flag', () => {
    const p = policy([`${ALICE}=db.*`, `${ALICE}=ping`])
    assert.equal(p.mode, 'restricted')
    assert.equal(p.ruleCount, 2)
    assert.ok(p.allows(ALICE, 'db.get').allowed)
    assert.ok(p.allows(ALICE, 'ping').allowed)
    assert.ok(!p.allows(ALICE, 'admin.drop').allowed)
    const denied = p.allows(MALLORY, 'db.get')
    assert.equal(denied.allowed, false)
    assert.match(denied.reason, new RegExp(`peer ${MALLORY} may not call "db.get" on gateway ${SELF}`))
    assert.match(denied.reason, new RegExp(`--allow-caller ${MALLORY}=db\\.get`))
    // a tunnelled method is named by its full name
    assert.match(p.allows(MALLORY, '/pkg.Svc/M').reason, /may not call "pkg\.Svc\.M"/)
  })

  it('policy - a rule without a pattern allows everything; "*" as the peer allows any caller', () => {
    const p = policy([ALICE, '*=ping'])
    assert.ok(p.allows(ALICE, 'anything').allowed)
    assert.ok(p.allows(ALICE, '/pkg.Svc/M').allowed)
    assert.ok(p.allows(MALLORY, 'ping').allowed)
    assert.ok(!p.allows(MALLORY, 'echo').allowed)
  })

  it('policy - calls from the gateway to itself are always allowed', () => {
    assert.ok(policy([`${ALICE}=x`]).allows(SELF, 'db.delete').allowed)
  })

  it('policy - a bad --allow-caller names the flag and says what is wrong', () => {
    assert.throws(() => parseAllowCaller('not-a-peer=x'), /--allow-caller "not-a-peer=x": "not-a-peer" is not a libp2p peer id/)
    assert.throws(() => parseAllowCaller(`${ALICE}=db*`), /--allow-caller .*"\*" is allowed only/)
    assert.throws(() => parseAllowCaller(`${ALICE}=`), /--allow-caller .*empty method pattern/)
    assert.throws(() => parseAllowCaller('=x'), /names no peer/)
  })

  it('policy file - one rule per line like the flag, comments and blanks ignored; errors name the file and line', () => {
    const rules = parseCallerPolicy(`# who may call us\n\n${ALICE}=db.*   # the app\n  *=ping\n${MALLORY}\n`, 'p.txt')
    assert.deepEqual(
      rules.map((r) => [r.peerId, r.pattern.text, r.source]),
      [
        [ALICE, 'db.*', 'p.txt:3'],
        ['*', 'ping', 'p.txt:4'],
        [MALLORY, '*', 'p.txt:5'],
      ],
    )
    assert.throws(
      () => parseCallerPolicy(`${ALICE}=db.*\n${ALICE}=a*b\n`, 'p.txt'),
      (e: unknown) => e instanceof StargateError && e.code === Code.InvalidArgument && /--caller-policy p\.txt line 2: /.test(e.rawMessage),
    )
  })

  it('policy file - read at start (a bad file stops it), re-read by reload(); a bad reload keeps the rules in force', () => {
    const file = join(dir, 'callers')
    writeFileSync(file, `${ALICE}=db.*\n`)
    const p = policy([`${MALLORY}=ping`], file)
    assert.equal(p.ruleCount, 2)
    assert.ok(p.allows(ALICE, 'db.get').allowed)
    assert.ok(!p.allows(ALICE, 'echo').allowed)
    writeFileSync(file, `${ALICE}=echo\n`)
    assert.equal(p.reload(), 2)
    assert.ok(p.allows(ALICE, 'echo').allowed)
    assert.ok(!p.allows(ALICE, 'db.get').allowed, 'the old file rule is gone')
    assert.ok(p.allows(MALLORY, 'ping').allowed, 'flag rules stay')
    writeFileSync(file, `${ALICE}=echo\nnonsense\n`)
    assert.throws(() => p.reload(), /line 2/)
    assert.ok(p.allows(ALICE, 'echo').allowed, 'the rules in force stay')
    writeFileSync(file, '# nobody\n')
    assert.equal(p.reload(), 1)
    assert.throws(() => policy([], join(dir, 'missing')), /cannot read --caller-policy/)
    writeFileSync(file, 'bad\n')
    assert.throws(() => policy([], file), /--caller-policy .* line 1/)
  })
})
