import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  decodeStunMessage,
  encodeBindingRequest,
  encodeBindingSuccess,
  encodeStunMessage,
  isBindingRequest,
  mappedAddressOf,
  newTransactionId,
  STUN_ATTR_MAPPED_ADDRESS,
  STUN_ATTR_XOR_MAPPED_ADDRESS,
  STUN_BINDING_SUCCESS,
} from './stun.ts'

const TXID = Uint8Array.from([0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae])

describe('stun codec', () => {
  it('stun codec - binding request has the RFC 5389 header and round-trips', () => {
    const buf = encodeBindingRequest(TXID)
    assert.equal(buf.length, 20)
    assert.deepEqual([...buf.subarray(0, 8)], [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42])
    const msg = decodeStunMessage(buf)
    assert.ok(msg != null && isBindingRequest(msg))
    assert.deepEqual([...msg.transactionId], [...TXID])
  })

  it('stun codec - XOR-MAPPED-ADDRESS matches the RFC 5769 IPv4 test vector', () => {
    // RFC 5769 2.2: 192.0.2.1:32853 encodes as port 0xa147, address 0xe112a643.
    const buf = encodeBindingSuccess(TXID, { address: '192.0.2.1', port: 32853 })
    const msg = decodeStunMessage(buf)!
    const xor = msg.attributes.find((a) => a.type === STUN_ATTR_XOR_MAPPED_ADDRESS)!
    assert.deepEqual([...xor.value], [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43])
    const plain = msg.attributes.find((a) => a.type === STUN_ATTR_MAPPED_ADDRESS)!
    assert.deepEqual([...plain.value], [0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1])
    assert.deepEqual(mappedAddressOf(msg), { address: '192.0.2.1', port: 32853 })
  })

  it('stun codec - XOR-MAPPED-ADDRESS matches the RFC 5769 IPv6 test vector', () => {
    // RFC 5769 2.3: 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
    const buf = encodeBindingSuccess(TXID, { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 })
    const msg = decodeStunMessage(buf)!
    const xor = msg.attributes.find((a) => a.type === STUN_ATTR_XOR_MAPPED_ADDRESS)!
    assert.equal(Buffer.from(xor.value).toString('hex'), '0002a1470113a9faa5d3f179bc25f4b5bed2b9d9')
    assert.deepEqual(mappedAddressOf(msg), { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 })
    const compressed = decodeStunMessage(encodeBindingSuccess(TXID, { address: '::1', port: 1 }))!
    assert.deepEqual(mappedAddressOf(compressed), { address: '::1', port: 1 })
  })

  it('stun codec - MAPPED-ADDRESS is used when XOR-MAPPED-ADDRESS is absent', () => {
    const full = decodeStunMessage(encodeBindingSuccess(TXID, { address: '198.18.0.7', port: 40000 }))!
    const onlyPlain = encodeStunMessage({
      type: STUN_BINDING_SUCCESS,
      transactionId: TXID,
      attributes: full.attributes.filter((a) => a.type === STUN_ATTR_MAPPED_ADDRESS),
    })
    assert.deepEqual(mappedAddressOf(decodeStunMessage(onlyPlain)!), { address: '198.18.0.7', port: 40000 })
  })

  it('stun codec - software attribute is padded to 4 bytes and skipped when decoding', () => {
    const buf = encodeBindingSuccess(newTransactionId(), { address: '100.64.1.2', port: 5 }, 'odd')
    assert.equal(buf.length % 4, 0)
    assert.deepEqual(mappedAddressOf(decodeStunMessage(buf)!), { address: '100.64.1.2', port: 5 })
  })

  it('stun codec - garbage is rejected', () => {
    const good = encodeBindingSuccess(TXID, { address: '192.0.2.1', port: 1 })
    const mutate = (f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(good)
      f(b)
      return b
    }
    const bad: Array<[string, Uint8Array]> = [
      ['empty', new Uint8Array(0)],
      ['short header', good.subarray(0, 19)],
      ['wrong cookie', mutate((b) => b.writeUInt32BE(0x2112a443, 4))],
      ['leading bits set', mutate((b) => b.writeUInt16BE(0xc101, 0))],
      ['length too long', mutate((b) => b.writeUInt16BE(b.readUInt16BE(2) + 4, 2))],
      ['length not multiple of 4', mutate((b) => b.writeUInt16BE(b.readUInt16BE(2) - 1, 2))],
      ['truncated datagram', good.subarray(0, good.length - 4)],
      ['attribute past the end', mutate((b) => b.writeUInt16BE(200, 22))],
      ['http', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ]
    for (const [name, buf] of bad) assert.equal(decodeStunMessage(buf), undefined, name)
    const request = decodeStunMessage(encodeBindingRequest(TXID))!
    assert.equal(mappedAddressOf(request), undefined, 'a request carries no mapping')
    const badFamily = decodeStunMessage(mutate((b) => b.writeUInt8(0x03, 25)))!
    assert.equal(mappedAddressOf(badFamily), undefined, 'unknown address family')
  })

  it('stun codec - transaction id must be 12 bytes', () => {
    assert.throws(() => encodeBindingRequest(new Uint8Array(11)), RangeError)
  })
})
