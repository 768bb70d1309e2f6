/**
 * Issue 13 item 5: a frame must be complete within an absolute deadline after its first byte. A real
 * gateway, and a bare libp2p peer in this process that starts a frame and then trickles one byte at a
 * time (each byte well inside the deadline, so a timer restarted per chunk would never fire).
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { Harness } from '../lib/harness.ts'
import { RawPeer } from '../lib/raw-peer.ts'

const FRAME_DEADLINE_MS = 1_500
const TRICKLE_EVERY_MS = 100
/** Bytes the announced frame needs: trickled at TRICKLE_EVERY_MS, it would take 12 s to complete. */
const FRAME_BYTES = 120

describe('peer streams: frame deadline', () => {
  const h = new Harness()
  const peers: RawPeer[] = []
  after(async () => {
    await Promise.all(peers.map((p) => p.stop()))
    await h.close()
  })

  it('framing - a peer trickling one byte at a time is cut off at the frame deadline, and the gateway serves on', async () => {
    const g = await h.gateway(['--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--frame-stall-timeout-ms', String(FRAME_DEADLINE_MS)], {
      name: 'trickled',
    })
    const addr = g.multiaddrs.find((a) => a.includes('/127.0.0.1/'))
    assert.ok(addr != null, 'a loopback multiaddr')
    const peer = await RawPeer.create()
    peers.push(peer)
    const s = await peer.open(addr)
    const closed = new Promise<number>((resolve) => s.stream.addEventListener('close', () => resolve(performance.now()), { once: true }))

    const startedAt = performance.now()
    await s.sendRaw(Uint8Array.of(FRAME_BYTES)) // the length prefix: a frame has started
    let sent = 0
    let cut = false
    void closed.then(() => {
      cut = true
    })
    while (!cut && sent < FRAME_BYTES - 1) {
      await new Promise((resolve) => setTimeout(resolve, TRICKLE_EVERY_MS))
      if (cut) break
      try {
        await s.sendRaw(Uint8Array.of(0))
        sent++
      } catch {
        break // the stream was reset under us
      }
    }
    const cutAfterMs = (await closed) - startedAt
    process.stderr.write(`trickling peer cut off after ${Math.round(cutAfterMs)} ms (deadline ${FRAME_DEADLINE_MS} ms), ${sent} bytes in\n`)
    assert.ok(sent < FRAME_BYTES - 1, `the frame was never completed (${sent} of ${FRAME_BYTES} bytes trickled)`)
    assert.ok(cutAfterMs >= FRAME_DEADLINE_MS - 50, `not cut before the deadline (${cutAfterMs} ms)`)
    assert.ok(cutAfterMs < FRAME_DEADLINE_MS + 3_000, `cut at the deadline, not later (${cutAfterMs} ms)`)
    await g.proc.waitFor(/stalled: a frame was started but not completed within 1500 ms/)

    // The gateway serves on: a fresh stream on the same connection gets its ping answered.
    const res = await (await peer.open(addr)).call({ requestId: 'after-trickle', method: 'ping' })
    assert.equal(res.result.case, 'json')
    assert.ok(g.proc.running)
  })
})
