/**
 * What an EchoService call must come back with, whichever server answered it and whatever was in between
 * (nothing, or gateways and a relay): the bytes, the order, the echoed headers and trailers, the status.
 */
import assert from 'node:assert/strict'
import { BinaryWriter } from '@bufbuild/protobuf/wire'
import { generatedPayload } from '../lib/echo.ts'
import { type EchoResult, type EchoServerLang, generatedSha256, type MetadataJson, repeatedSha256 } from './echo-programs.ts'

/** Bytes that are not UTF-8 (0xff, 0xfe, a lone continuation byte) and a NUL: only -bin metadata carries them. */
export const BIN_VALUE = Buffer.from([0x00, 0x01, 0xff, 0xfe, 0x80, 0x7f, 0x0a, 0x00])

/** Request metadata the echo servers copy back: text, a repeated key, and binary. */
export const ECHO_METADATA: ReadonlyArray<readonly [string, string]> = [
  ['echo-text', 'plain value, with spaces'],
  ['echo-multi', 'one'],
  ['echo-multi', 'two'],
  ['echo-data-bin', BIN_VALUE.toString('base64')],
]

/**
 * The request metadata for a server: the Node one (connect-node, like grpc-js) reads a repeated key as one
 * comma-joined value, the same under HTTP semantics but not entry for entry, so it gets no repeated key.
 */
export function echoMetadataFor(server: EchoServerLang): ReadonlyArray<readonly [string, string]> {
  return server === 'node' ? ECHO_METADATA.filter(([k]) => k !== 'echo-multi') : ECHO_METADATA
}

/** Metadata entries as key → values (what the programs print), keys with a prefix. */
export function metadataJson(entries: ReadonlyArray<readonly [string, string]>, prefix = ''): MetadataJson {
  const out: MetadataJson = {}
  for (const [k, v] of entries) out[`${prefix}${k}`] = [...(out[`${prefix}${k}`] ?? []), v]
  return out
}

/** Every entry of `want` is in `got` with the same values in the same order. */
export function assertMetadataIncludes(got: MetadataJson, want: MetadataJson, what: string): void {
  for (const [k, v] of Object.entries(want)) assert.deepEqual(got[k], v, `${what}: ${k} (got ${JSON.stringify(got)})`)
}

export interface ExpectedCall {
  /** Messages per stream (the client's --count). */
  count: number
  /** The request metadata sent (echo-* entries come back). */
  metadata?: ReadonlyArray<readonly [string, string]>
  /** ServerStream generated response size (the client's --response-bytes). */
  responseBytes?: number
}

/** A successful call: every byte came back as the proto says, in order, with the echoed headers and trailers. */
export function assertEchoed(r: EchoResult, want: ExpectedCall): void {
  const what = `${r.kind} of ${r.size} B`
  assert.equal(r.code, 0, `${what}: status ${r.code} ${r.message}`)
  assert.ok(r.in_order, `${what}: responses out of order`)
  const { count } = want
  switch (r.kind) {
    case 'unary':
      assert.equal(r.received_bytes, r.size, what)
      assert.equal(r.received_sha256, generatedSha256(1, r.size), `${what}: response bytes`)
      break
    case 'server_stream': {
      assert.equal(r.received_messages, count, what)
      const rb = want.responseBytes ?? 0
      const sha = rb > 0 ? generatedSha256(count, rb) : repeatedSha256(generatedPayload(0, r.size), count)
      assert.equal(r.received_bytes, count * (rb > 0 ? rb : r.size), what)
      assert.equal(r.received_sha256, sha, `${what}: response bytes`)
      break
    }
    case 'client_stream':
      assert.deepEqual(
        r.server,
        { received_messages: count, received_bytes: count * r.size, sha256: generatedSha256(count, r.size) },
        `${what}: what the server received`,
      )
      break
    case 'bidi':
      assert.equal(r.received_messages, count, what)
      assert.equal(r.received_sha256, generatedSha256(count, r.size), `${what}: response bytes`)
      break
  }
  if (want.metadata != null) {
    assertMetadataIncludes(r.headers, metadataJson(want.metadata), `${what} headers`)
    assertMetadataIncludes(r.trailers, metadataJson(want.metadata, 'trailer-'), `${what} trailers`)
  }
}

/** A google.rpc.Status with one google.rpc.ErrorInfo detail, serialized: what --fail-details carries. */
export function statusDetails(code: number, message: string, reason: string): Uint8Array {
  const errorInfo = new BinaryWriter().uint32(10).string(reason).uint32(18).string('stargate.test').finish()
  const any = new BinaryWriter().uint32(10).string('type.googleapis.com/google.rpc.ErrorInfo').uint32(18).bytes(errorInfo).finish()
  return new BinaryWriter().uint32(8).int32(code).uint32(18).string(message).uint32(26).bytes(any).finish()
}
