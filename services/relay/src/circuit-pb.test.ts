import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
// js-libp2p's own (protons) codec, not exported by the package: the reference our hand encoding must match.
import * as ref from '../../../node_modules/@libp2p/circuit-relay-v2/dist/src/pb/index.js'
import { HopMessageCodec, HopType, ReservationVoucherCodec, Status, StopMessageCodec, StopType } from './circuit-pb.ts'

const id = new Uint8Array([0, 36, 8, 1, 18, 32, ...new Array(32).fill(7)])
const addr = new Uint8Array([4, 127, 0, 0, 1, 6, 15, 161])

const voucher = ref.Envelope.encode({
  publicKey: new Uint8Array([8, 1, 18, 2, 9, 9]),
  payloadType: new Uint8Array([3, 2]),
  payload: { relay: id, peer: id, expiration: 5n },
  signature: new Uint8Array([1, 2, 3]),
})

describe('circuit-pb', () => {
  it('circuit-pb - HopMessage RESERVE/CONNECT/STATUS encode byte-identically to js-libp2p', () => {
    const msgs = [
      { type: HopType.RESERVE },
      { type: HopType.CONNECT, peer: { id, addrs: [addr] } },
      {
        type: HopType.STATUS,
        status: Status.OK,
        reservation: { expire: 1_800_000_000n, addrs: [addr, addr], voucher },
        limit: { duration: 120, data: 131_072n },
      },
      { type: HopType.STATUS, status: Status.RESERVATION_REFUSED },
    ]
    for (const m of msgs) {
      const ours = HopMessageCodec.encode(m)
      const theirs = ref.HopMessage.encode(refHop(m))
      assert.deepEqual(ours, theirs)
      const back = ref.HopMessage.decode(ours)
      assert.equal(back.type, HOP_NAMES[m.type])
      assert.equal(back.status, m.status == null ? undefined : STATUS_NAMES[m.status])
      assert.deepEqual(HopMessageCodec.decode(theirs), m)
    }
  })

  it('circuit-pb - an absent limit stays absent, a zero type is still written', () => {
    const bytes = HopMessageCodec.encode({ type: HopType.RESERVE })
    assert.deepEqual([...bytes], [8, 0])
    const d = ref.HopMessage.decode(HopMessageCodec.encode({ type: HopType.STATUS, status: Status.OK }))
    assert.equal(d.limit, undefined)
  })

  it('circuit-pb - StopMessage round-trips with js-libp2p', () => {
    const m = { type: StopType.CONNECT, peer: { id, addrs: [] }, limit: { data: 10n } }
    assert.deepEqual(StopMessageCodec.encode(m), ref.StopMessage.encode({ ...m, type: ref.StopMessage.Type.CONNECT }))
    const reply = ref.StopMessage.encode({ type: ref.StopMessage.Type.STATUS, status: ref.Status.OK })
    assert.deepEqual(StopMessageCodec.decode(reply), { type: StopType.STATUS, status: Status.OK })
  })

  it('circuit-pb - ReservationVoucher matches js-libp2p', () => {
    const v = { relay: id, peer: id.slice().reverse(), expiration: 42n }
    assert.deepEqual(ReservationVoucherCodec.encode(v), ref.ReservationVoucher.encode(v))
    assert.deepEqual(ReservationVoucherCodec.decode(ref.ReservationVoucher.encode(v)), v)
  })
})

const HOP_NAMES: Record<number, string> = { 0: 'RESERVE', 1: 'CONNECT', 2: 'STATUS' }
const STATUS_NAMES = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k])) as Record<number, string>

function refHop(m: { type: number; status?: number; reservation?: unknown }): never {
  const r = { ...m, type: HOP_NAMES[m.type] } as Record<string, unknown>
  if (m.status != null) r.status = STATUS_NAMES[m.status]
  const res = m.reservation as { expire: bigint; addrs: Uint8Array[]; voucher?: Uint8Array } | undefined
  // protons models the voucher as an Envelope message; feed it the same bytes by decoding them as one.
  if (res?.voucher != null) r.reservation = { ...res, voucher: ref.Envelope.decode(res.voucher) }
  return r as never
}
