import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Code, messageOf, StargateError } from './errors.ts'

/**
 * Loads the Ed25519 identity at `path`, creating it (mode 0600) on first use.
 * The file holds the libp2p protobuf encoding of the private key, so it is portable
 * between Stargate, other libp2p implementations and a Kubernetes Secret.
 */
export async function loadOrCreateIdentity(path: string): Promise<{ privateKey: PrivateKey; created: boolean }> {
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err: unknown) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new StargateError(Code.FailedPrecondition, `cannot read identity file ${path}: ${messageOf(err)}`, { cause: err })
    }
  }
  if (bytes != null) {
    try {
      return { privateKey: privateKeyFromProtobuf(bytes), created: false }
    } catch (err: unknown) {
      throw new StargateError(Code.FailedPrecondition, `identity file ${path} is not a libp2p private key: ${messageOf(err)}`, {
        cause: err,
      })
    }
  }
  const privateKey = await generateKeyPair('Ed25519')
  await writeIdentity(path, privateKey)
  return { privateKey, created: true }
}

/** Writes a private key atomically with mode 0600. */
export async function writeIdentity(path: string, privateKey: PrivateKey): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(privateKey), { mode: 0o600 })
  await rename(tmp, path)
}

/** The peer id string of a private key. */
export function peerIdOf(privateKey: PrivateKey): string {
  return peerIdFromPrivateKey(privateKey).toString()
}
