import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { describe, it } from 'node:test'
import { exitOnProcessFaults, FAULT_EXIT_CODE } from './lifecycle.ts'
import { createLogger } from './log.ts'

/** A stand-in for `process`: emits the fault events and records exit codes instead of exiting. */
function fakeProcess(): EventEmitter & { exits: number[]; exit(code: number): void } {
  const p = Object.assign(new EventEmitter(), { exits: [] as number[] })
  return Object.assign(p, { exit: (code: number) => void p.exits.push(code) })
}

describe('lifecycle', () => {
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    it(`lifecycle - an ${event} is logged with its stack and exits with ${FAULT_EXIT_CODE}`, () => {
      const lines: string[] = []
      const p = fakeProcess()
      exitOnProcessFaults(createLogger('test', { level: 'info', write: (l) => lines.push(l) }), p)
      p.emit(event, new Error('boom'))
      p.emit(event, new Error('second'))
      assert.deepEqual(p.exits, [FAULT_EXIT_CODE], 'exits once')
      assert.equal(lines.length, 1)
      const rec = JSON.parse(lines[0]!) as { level: string; msg: string; err: string }
      assert.equal(rec.level, 'error')
      assert.match(rec.msg, /exiting with code 70/)
      assert.match(rec.err, /Error: boom\n.*lifecycle\.test\.ts/s)
    })
  }
})
