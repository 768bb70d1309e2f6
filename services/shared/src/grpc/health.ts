import { create } from '@bufbuild/protobuf'
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect'
import { Code, StargateError } from '../errors.ts'
import {
  type Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from '../gen/grpc/health/v1/health_pb.js'

export { ServingStatus }

/** The full name of the health service. */
export const HEALTH_SERVICE = 'grpc.health.v1.Health'

/**
 * grpc.health.v1 (https://github.com/grpc/grpc/blob/master/doc/health-checking.md): Check, Watch and List
 * over a status per service name ("" = the whole server).
 */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>()
  private readonly watchers = new Map<string, Set<(status: ServingStatus) => void>>()

  /** Services SERVING from the start (the empty name, the whole server, is added). */
  constructor(services: string[]) {
    for (const name of ['', ...services]) this.statuses.set(name, ServingStatus.SERVING)
  }

  setStatus(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return
    this.statuses.set(service, status)
    for (const notify of this.watchers.get(service) ?? []) notify(status)
  }

  /** Every known service NOT_SERVING (the server is draining). */
  setAllNotServing(): void {
    for (const name of this.statuses.keys()) this.setStatus(name, ServingStatus.NOT_SERVING)
  }

  status(service: string): ServingStatus | undefined {
    return this.statuses.get(service)
  }

  /** The connect-es implementation. */
  impl(): ServiceImpl<typeof Health> {
    return {
      check: (req) => {
        const status = this.statuses.get(req.service)
        if (status == null) throw new StargateError(Code.NotFound, `unknown service "${req.service}" (not served here)`)
        return { status }
      },
      list: () => ({
        statuses: Object.fromEntries([...this.statuses].map(([name, status]) => [name, create(HealthCheckResponseSchema, { status })])),
      }),
      watch: (req, ctx) => this.watch(req.service, ctx),
    }
  }

  /**
   * Sends the current status, then each change, until the client goes away or the server stops. Only the
   * latest status waits to be sent: a slow reader never makes the queue grow.
   */
  private async *watch(service: string, ctx: HandlerContext): AsyncGenerator<HealthCheckResponse> {
    let pending: ServingStatus | undefined = this.statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN
    let wake: (() => void) | undefined
    const notify = (status: ServingStatus): void => {
      pending = status
      wake?.()
    }
    const onAbort = (): void => wake?.()
    const set = this.watchers.get(service) ?? new Set()
    this.watchers.set(service, set)
    set.add(notify)
    ctx.signal.addEventListener('abort', onAbort)
    try {
      for (;;) {
        if (ctx.signal.aborted) throw ctx.signal.reason
        if (pending != null) {
          const status = pending
          pending = undefined
          yield create(HealthCheckResponseSchema, { status })
          continue
        }
        await new Promise<void>((resolve) => {
          wake = resolve
        })
        wake = undefined
      }
    } finally {
      ctx.signal.removeEventListener('abort', onAbort)
      set.delete(notify)
      if (set.size === 0) this.watchers.delete(service)
    }
  }
}
