import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Code, ConnectError } from '@connectrpc/connect'
import { createEnvelopeReadableStream, type EnvelopedMessage } from '@connectrpc/connect/protocol'
import { endStreamFlag, endStreamFromJson } from '@connectrpc/connect/protocol-connect'
import { webErrorResponse } from './web-error.ts'

/** The envelopes of a body, as connect-es's own reader splits them. */
async function envelopes(body: Uint8Array): Promise<EnvelopedMessage[]> {
  const bytes = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(body)
      controller.close()
    },
  })
  const reader = createEnvelopeReadableStream(bytes).getReader()
  const out: EnvelopedMessage[] = []
  for (let r = await reader.read(); !r.done; r = await reader.read()) out.push(r.value)
  return out
}

describe('web error responses', () => {
  it('web error - Connect streaming: one end-stream envelope (flag 0x02) that connect-es reads back as the error', async () => {
    const r = webErrorResponse('application/connect+proto', new ConnectError('no route to pkg.Svc', Code.Unavailable))
    assert.equal(r?.status, 200)
    assert.equal(r.headers['content-type'], 'application/connect+proto')
    const [end, ...rest] = await envelopes(r.body ?? new Uint8Array())
    assert.deepEqual(rest, [])
    assert.equal(end?.flags, endStreamFlag)
    const { error } = endStreamFromJson(end.data)
    assert.equal(error?.code, Code.Unavailable)
    assert.equal(error?.rawMessage, 'no route to pkg.Svc')
  })

  it('web error - gRPC-Web is trailers-only (status in the headers, no body); other content types get none', () => {
    const r = webErrorResponse('application/grpc-web+proto', new ConnectError('refused', Code.PermissionDenied))
    assert.equal(r?.status, 200)
    assert.equal(r.headers['grpc-status'], String(Code.PermissionDenied))
    assert.equal(r.headers['grpc-message'], 'refused')
    assert.equal(r.body, undefined)
    assert.equal(webErrorResponse('application/grpc', new ConnectError('x')), undefined)
  })
})
