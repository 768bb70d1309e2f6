import type { ConnectError } from '@connectrpc/connect'
import { codeToHttpStatus, endStreamFlag, endStreamToJson, errorToJsonBytes } from '@connectrpc/connect/protocol-connect'
import { setTrailerStatus } from '@connectrpc/connect/protocol-grpc'
import { encodeFrame } from './wire.ts'

/**
 * An error answered in the protocol of a Connect or gRPC-Web request, for requests that connect-es does not
 * serve itself (tunnelled services: refused by the request gate, or in a protocol the tunnel does not
 * translate), so that a web client reads its code and message rather than a bare HTTP status:
 *
 * - gRPC-Web (application/grpc-web*): 200 and a trailers-only response, grpc-status and grpc-message in the
 *   headers (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md).
 * - Connect streaming (application/connect+*): 200 and one end-stream message holding the error as JSON.
 * - Connect unary (application/json, application/proto): the HTTP status of the code and the error as JSON
 *   (https://connectrpc.com/docs/protocol#error-end-stream).
 */

export interface WebErrorResponse {
  status: number
  headers: Record<string, string>
  body?: Uint8Array
}

const GRPC_WEB = /^application\/grpc-web/i
const CONNECT_STREAM = /^application\/connect\+/i
const CONNECT_UNARY = /^application\/(json|proto)(;|$)/i

/** The response telling `err` to a Connect or gRPC-Web client; undefined when `contentType` is neither. */
export function webErrorResponse(contentType: string, err: ConnectError): WebErrorResponse | undefined {
  if (GRPC_WEB.test(contentType)) {
    const headers: Record<string, string> = { 'content-type': contentType }
    setTrailerStatus(new Headers(), err).forEach((value, key) => {
      headers[key] = value
    })
    return { status: 200, headers }
  }
  if (CONNECT_STREAM.test(contentType)) {
    const json = new TextEncoder().encode(JSON.stringify(endStreamToJson(new Headers(), err, undefined)))
    return { status: 200, headers: { 'content-type': contentType }, body: encodeFrame(json, endStreamFlag) }
  }
  if (CONNECT_UNARY.test(contentType)) {
    return { status: codeToHttpStatus(err.code), headers: { 'content-type': 'application/json' }, body: errorToJsonBytes(err, undefined) }
  }
  return undefined
}
