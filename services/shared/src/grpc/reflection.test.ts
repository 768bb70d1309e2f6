import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from '@bufbuild/protobuf/wkt'
import { stargateDescriptorSets } from '../descriptors.ts'
import { Code } from '../errors.ts'
import { ServerReflectionRequestSchema, type ServerReflectionResponse } from '../gen/grpc/reflection/v1/reflection_pb.js'
import { answerReflection, DescriptorIndex } from './reflection.ts'

/** A proto2 file with extensions of a message in another file, and nested types. */
function extensionSet(): Uint8Array {
  const base = create(FileDescriptorProtoSchema, {
    name: 'test/base.proto',
    package: 'test',
    syntax: 'proto2',
    messageType: [
      {
        name: 'Base',
        field: [{ name: 'id', number: 1, type: FieldDescriptorProto_Type.INT32, label: FieldDescriptorProto_Label.OPTIONAL }],
        extensionRange: [{ start: 100, end: 200 }],
        nestedType: [{ name: 'Inner', oneofDecl: [{ name: 'choice' }] }],
        enumType: [{ name: 'Kind', value: [{ name: 'KIND_A', number: 0 }] }],
      },
    ],
  })
  const ext = create(FileDescriptorProtoSchema, {
    name: 'test/ext.proto',
    package: 'test.ext',
    syntax: 'proto2',
    dependency: ['test/base.proto'],
    extension: [
      {
        name: 'color',
        number: 150,
        extendee: '.test.Base',
        type: FieldDescriptorProto_Type.STRING,
        label: FieldDescriptorProto_Label.OPTIONAL,
      },
      {
        name: 'size',
        number: 101,
        extendee: '.test.Base',
        type: FieldDescriptorProto_Type.INT32,
        label: FieldDescriptorProto_Label.OPTIONAL,
      },
    ],
    service: [{ name: 'Svc', method: [{ name: 'Do', inputType: '.test.Base', outputType: '.test.Base' }] }],
  })
  return toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: [base, ext] }))
}

function ask(index: DescriptorIndex, init: Parameters<typeof create<typeof ServerReflectionRequestSchema>>[1], sent = new Set<string>()) {
  return answerReflection(index, () => ['test.ext.Svc'], create(ServerReflectionRequestSchema, init), sent)
}

function fileNames(res: ServerReflectionResponse): string[] {
  assert.equal(res.messageResponse.case, 'fileDescriptorResponse', JSON.stringify(res.messageResponse.value))
  return (res.messageResponse.value as { fileDescriptorProto: Uint8Array[] }).fileDescriptorProto.map(
    (b) => fromBinary(FileDescriptorProtoSchema, b).name,
  )
}

describe('reflection', () => {
  const index = new DescriptorIndex([extensionSet()])

  it('reflection - list names the services given; the request is echoed with its host', () => {
    const res = ask(index, { host: 'h', messageRequest: { case: 'listServices', value: '' } })
    assert.equal(res.validHost, 'h')
    assert.equal(res.originalRequest?.messageRequest.case, 'listServices')
    assert.deepEqual(res.messageResponse.value, {
      $typeName: 'grpc.reflection.v1.ListServiceResponse',
      service: [{ $typeName: 'grpc.reflection.v1.ServiceResponse', name: 'test.ext.Svc' }],
    })
  })

  it('reflection - every kind of symbol resolves to its file, with its dependencies after it', () => {
    const symbols: Record<string, string> = {
      'test.Base': 'test/base.proto',
      'test.Base.id': 'test/base.proto',
      'test.Base.Inner': 'test/base.proto',
      'test.Base.Inner.choice': 'test/base.proto',
      'test.Base.Kind': 'test/base.proto',
      'test.Base.KIND_A': 'test/base.proto',
      'test.ext.Svc': 'test/ext.proto',
      'test.ext.Svc.Do': 'test/ext.proto',
      'test.ext.color': 'test/ext.proto',
      '.test.Base': 'test/base.proto',
    }
    for (const [symbol, file] of Object.entries(symbols)) {
      const names = fileNames(ask(index, { messageRequest: { case: 'fileContainingSymbol', value: symbol } }))
      assert.equal(names[0], file, symbol)
    }
    assert.deepEqual(fileNames(ask(index, { messageRequest: { case: 'fileContainingSymbol', value: 'test.ext.Svc' } })), [
      'test/ext.proto',
      'test/base.proto',
    ])
  })

  it('reflection - files already sent on the stream are not sent again, the one asked for always is', () => {
    const sent = new Set<string>()
    assert.deepEqual(fileNames(ask(index, { messageRequest: { case: 'fileByFilename', value: 'test/ext.proto' } }, sent)), [
      'test/ext.proto',
      'test/base.proto',
    ])
    assert.deepEqual(fileNames(ask(index, { messageRequest: { case: 'fileByFilename', value: 'test/ext.proto' } }, sent)), [
      'test/ext.proto',
    ])
    assert.deepEqual(fileNames(ask(index, { messageRequest: { case: 'fileByFilename', value: 'test/base.proto' } }, sent)), [
      'test/base.proto',
    ])
  })

  it('reflection - extensions: by number, and all numbers of a type (sorted)', () => {
    const byNumber = ask(index, {
      messageRequest: { case: 'fileContainingExtension', value: { containingType: 'test.Base', extensionNumber: 150 } },
    })
    assert.equal(fileNames(byNumber)[0], 'test/ext.proto')
    const all = ask(index, { messageRequest: { case: 'allExtensionNumbersOfType', value: 'test.Base' } })
    assert.equal(all.messageResponse.case, 'allExtensionNumbersResponse')
    assert.deepEqual((all.messageResponse.value as { extensionNumber: number[] }).extensionNumber, [101, 150])
    assert.equal((all.messageResponse.value as { baseTypeName: string }).baseTypeName, 'test.Base')
    const none = ask(index, { messageRequest: { case: 'allExtensionNumbersOfType', value: 'test.Base.Inner' } })
    assert.deepEqual((none.messageResponse.value as { extensionNumber: number[] }).extensionNumber, [])
  })

  it('reflection - unknown files, symbols, extensions and types are NOT_FOUND naming what was asked', () => {
    const cases = [
      { case: 'fileByFilename', value: 'nope.proto' },
      { case: 'fileContainingSymbol', value: 'test.Nope' },
      { case: 'fileContainingExtension', value: { containingType: 'test.Base', extensionNumber: 199 } },
      { case: 'allExtensionNumbersOfType', value: 'test.Nope' },
    ] as const
    for (const messageRequest of cases) {
      const res = ask(index, { messageRequest } as never)
      assert.equal(res.messageResponse.case, 'errorResponse')
      const e = res.messageResponse.value as { errorCode: number; errorMessage: string }
      assert.equal(e.errorCode, Code.NotFound)
      assert.match(e.errorMessage, /nope\.proto|test\.Nope|199/)
    }
    const empty = ask(index, {})
    assert.equal((empty.messageResponse.value as { errorCode: number }).errorCode, Code.InvalidArgument)
  })

  it('reflection - the served descriptor sets keep the proto comments (source info) for describe', () => {
    const stargate = new DescriptorIndex(stargateDescriptorSets())
    const [file] = stargate.fileWithDependencies(stargate.fileOfSymbol('stargate.v1.GatewayService.Call') as string, new Set()) ?? []
    const proto = fromBinary(FileDescriptorProtoSchema, file as Uint8Array)
    assert.ok(proto.sourceCodeInfo?.location.some((l) => l.leadingComments.includes('Call sends one unary call')))
    assert.equal(stargate.fileOfSymbol('grpc.health.v1.Health.Watch'), 'grpc/health/v1/health.proto')
  })
})
