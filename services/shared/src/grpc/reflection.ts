import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from '@bufbuild/protobuf/wkt'
import type { ServiceImpl } from '@connectrpc/connect'
import { Code } from '../errors.ts'
import {
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
  ServerReflection as ServerReflectionV1,
} from '../gen/grpc/reflection/v1/reflection_pb.js'
import {
  type ServerReflection as ServerReflectionV1alpha,
  ServerReflectionRequestSchema as V1alphaRequestSchema,
  type ServerReflectionResponse as V1alphaResponse,
  ServerReflectionResponseSchema as V1alphaResponseSchema,
} from '../gen/grpc/reflection/v1alpha/reflection_pb.js'

/** The full names of the reflection services. */
export const REFLECTION_V1 = ServerReflectionV1.typeName
export const REFLECTION_V1ALPHA = 'grpc.reflection.v1alpha.ServerReflection'

interface IndexedFile {
  /** The FileDescriptorProto, serialized (with source info, so clients show the comments). */
  bytes: Uint8Array
  dependencies: string[]
}

/**
 * Every file, symbol and extension of a set of FileDescriptorSets (as `buf build` writes them), for server
 * reflection. Symbols are the fully-qualified names of packages' messages (nested too), fields, oneofs,
 * enums, enum values, services, methods and extensions.
 */
export class DescriptorIndex {
  private readonly files = new Map<string, IndexedFile>()
  private readonly symbols = new Map<string, string>()
  /** Extendee full name → extension number → file. */
  private readonly extensions = new Map<string, Map<number, string>>()

  constructor(descriptorSets: Uint8Array[]) {
    for (const set of descriptorSets) {
      for (const file of fromBinary(FileDescriptorSetSchema, set).file) {
        if (this.files.has(file.name)) continue
        this.files.set(file.name, { bytes: toBinary(FileDescriptorProtoSchema, file), dependencies: file.dependency })
        this.indexFile(file)
      }
    }
  }

  /** The file that defines a symbol. */
  fileOfSymbol(symbol: string): string | undefined {
    return this.symbols.get(symbol.startsWith('.') ? symbol.slice(1) : symbol)
  }

  fileOfExtension(extendee: string, number: number): string | undefined {
    return this.extensions.get(extendee)?.get(number)
  }

  /** The extension numbers of a message type; undefined when the type is unknown. */
  extensionNumbers(extendee: string): number[] | undefined {
    if (this.fileOfSymbol(extendee) == null) return undefined
    return [...(this.extensions.get(extendee)?.keys() ?? [])].sort((a, b) => a - b)
  }

  /**
   * A file and, after it, the files it depends on (transitively) that are not in `sent`; each one returned is
   * added to `sent`. The requested file is always included.
   */
  fileWithDependencies(name: string, sent: Set<string>): Uint8Array[] | undefined {
    const root = this.files.get(name)
    if (root == null) return undefined
    const out = [root.bytes]
    sent.add(name)
    const queue = [...root.dependencies]
    while (queue.length > 0) {
      const dep = queue.shift() as string
      const file = this.files.get(dep)
      if (file == null || sent.has(dep)) continue
      sent.add(dep)
      out.push(file.bytes)
      queue.push(...file.dependencies)
    }
    return out
  }

  private indexFile(file: FileDescriptorProto): void {
    const scope = file.package === '' ? '' : `${file.package}.`
    const add = (name: string): void => {
      if (!this.symbols.has(name)) this.symbols.set(name, file.name)
    }
    const enums = (prefix: string, list: EnumDescriptorProto[]): void => {
      for (const e of list) {
        add(`${prefix}${e.name}`)
        // Enum values are scoped next to their enum, as in C++.
        for (const v of e.value) add(`${prefix}${v.name}`)
      }
    }
    const extensions = (prefix: string, list: FieldDescriptorProto[]): void => {
      for (const ext of list) {
        add(`${prefix}${ext.name}`)
        const extendee = ext.extendee.startsWith('.') ? ext.extendee.slice(1) : ext.extendee
        const numbers = this.extensions.get(extendee) ?? new Map<number, string>()
        this.extensions.set(extendee, numbers)
        numbers.set(ext.number, file.name)
      }
    }
    const messages = (prefix: string, list: DescriptorProto[]): void => {
      for (const m of list) {
        const name = `${prefix}${m.name}`
        add(name)
        for (const f of m.field) add(`${name}.${f.name}`)
        for (const o of m.oneofDecl) add(`${name}.${o.name}`)
        enums(`${name}.`, m.enumType)
        extensions(`${name}.`, m.extension)
        messages(`${name}.`, m.nestedType)
      }
    }
    messages(scope, file.messageType)
    enums(scope, file.enumType)
    extensions(scope, file.extension)
    for (const s of file.service) {
      add(`${scope}${s.name}`)
      for (const m of s.method) add(`${scope}${s.name}.${m.name}`)
    }
  }
}

type ResponseInit = MessageInitShape<typeof ServerReflectionResponseSchema>['messageResponse']

/** Answers one reflection request (v1 messages). `sent` holds the files already sent on this stream. */
export function answerReflection(
  index: DescriptorIndex,
  listServices: () => string[],
  req: ServerReflectionRequest,
  sent: Set<string>,
): ServerReflectionResponse {
  const notFound = (message: string): ResponseInit => ({
    case: 'errorResponse',
    value: { errorCode: Code.NotFound, errorMessage: message },
  })
  const files = (name: string | undefined, what: string): ResponseInit => {
    const list = name == null ? undefined : index.fileWithDependencies(name, sent)
    return list == null ? notFound(`${what} not found`) : { case: 'fileDescriptorResponse', value: { fileDescriptorProto: list } }
  }
  let res: ResponseInit
  const r = req.messageRequest
  switch (r.case) {
    case 'listServices':
      res = { case: 'listServicesResponse', value: { service: listServices().map((name) => ({ name })) } }
      break
    case 'fileByFilename':
      res = files(r.value, `file "${r.value}"`)
      break
    case 'fileContainingSymbol':
      res = files(index.fileOfSymbol(r.value), `symbol "${r.value}"`)
      break
    case 'fileContainingExtension':
      res = files(
        index.fileOfExtension(r.value.containingType, r.value.extensionNumber),
        `extension ${r.value.extensionNumber} of "${r.value.containingType}"`,
      )
      break
    case 'allExtensionNumbersOfType': {
      const numbers = index.extensionNumbers(r.value)
      res =
        numbers == null
          ? notFound(`type "${r.value}" not found`)
          : { case: 'allExtensionNumbersResponse', value: { baseTypeName: r.value, extensionNumber: numbers } }
      break
    }
    default:
      res = {
        case: 'errorResponse',
        value: { errorCode: Code.InvalidArgument, errorMessage: 'empty reflection request: set one of its message_request fields' },
      }
  }
  return create(ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: res })
}

/**
 * grpc.reflection.v1 and v1alpha over a descriptor index. `listServices` names the services `list` shows.
 * v1alpha has the same messages on the wire as v1, so its requests and answers are converted through bytes.
 */
export function reflectionImpls(
  index: DescriptorIndex,
  listServices: () => string[],
): { v1: ServiceImpl<typeof ServerReflectionV1>; v1alpha: ServiceImpl<typeof ServerReflectionV1alpha> } {
  return {
    v1: {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>()
        for await (const req of requests) yield answerReflection(index, listServices, req, sent)
      },
    },
    v1alpha: {
      async *serverReflectionInfo(requests): AsyncGenerator<V1alphaResponse> {
        const sent = new Set<string>()
        for await (const alpha of requests) {
          const req = fromBinary(ServerReflectionRequestSchema, toBinary(V1alphaRequestSchema, alpha))
          const res = answerReflection(index, listServices, req, sent)
          yield fromBinary(V1alphaResponseSchema, toBinary(ServerReflectionResponseSchema, res))
        }
      },
    },
  }
}
