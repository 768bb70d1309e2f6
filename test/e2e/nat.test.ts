import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { type HostKind, type NetnsRelay, netnsUnsupported, Testbed, type TestbedHost } from '../netns/testbed.ts'

const unsupported = netnsUnsupported()

interface NatStatusJson {
  natType: string
  publicAddrs: string[]
  requiresRelay: boolean
  detectedAt?: string
}

describe('nat e2e (network namespaces)', { skip: unsupported ?? false, timeout: 180_000 }, () => {
  let tb: Testbed
  let relays: NetnsRelay[] = []

  before(async () => {
    tb = await Testbed.create()
    // Two relays on two public hosts: the two STUN observers a gateway needs to see a per-destination mapping.
    const [h1, h2] = [await tb.host('relay1', 'public'), await tb.host('relay2', 'public')]
    relays = await Promise.all([tb.relay(h1), tb.relay(h2)])
  })

  after(async () => {
    await tb?.close()
  })

  /** The host behind a firewall that lets traffic through only to relay 1's host (created once). */
  let fwHost: Promise<TestbedHost> | undefined
  function firewalled(): Promise<TestbedHost> {
    fwHost ??= tb.host('fw', { kind: 'firewall', allow: [relays[0]!.host] })
    return fwHost
  }

  /**
   * Starts a gateway behind `kind` with both relays' STUN responders as observers and returns its NatStatus.
   * (One --relay only: with two, libp2p's start waits on the second reservation behind the first, see report.)
   */
  async function natStatusBehind(name: string, kind: HostKind): Promise<{ nat: NatStatusJson; ip: string; publicIp: string }> {
    const host = await tb.host(name, kind)
    const gw = await tb.gateway(host, ['--relay', relays[0]!.multiaddr, ...relays.flatMap((r) => ['--stun', r.stun])])
    try {
      // The detector logs the status once its first run finished.
      await gw.proc.waitFor(/"msg":"nat status"/, 30_000)
      const status = await tb.grpcurl(host, gw.api, 'stargate.v1.GatewayService/GetStatus')
      return { nat: status.natStatus as NatStatusJson, ip: host.ip, publicIp: host.publicIp }
    } catch (err: unknown) {
      throw new Error(`${String(err)}\n${gw.proc.dump()}`)
    } finally {
      await gw.proc.stop()
    }
  }

  it('nat - a gateway on a public address reports NAT_TYPE_PUBLIC', async () => {
    const { nat, ip } = await natStatusBehind('pub', 'public')
    assert.equal(nat.natType, 'NAT_TYPE_PUBLIC')
    assert.equal(nat.requiresRelay, false)
    assert.equal(nat.publicAddrs.length, 1)
    assert.match(nat.publicAddrs[0]!, new RegExp(`^${ip.replaceAll('.', '\\.')}:\\d+$`))
    assert.ok(nat.detectedAt != null && Date.parse(nat.detectedAt) > Date.now() - 60_000)
  })

  it('nat - a gateway behind a port-preserving NAT reports NAT_TYPE_PRIVATE', async () => {
    const { nat, publicIp } = await natStatusBehind('nat', 'nat')
    assert.equal(nat.natType, 'NAT_TYPE_PRIVATE')
    assert.equal(nat.requiresRelay, false)
    // Both observers saw the router's public address and the same port.
    assert.equal(nat.publicAddrs.length, 1)
    assert.ok(nat.publicAddrs[0]!.startsWith(`${publicIp}:`), nat.publicAddrs[0])
  })

  it('nat - a gateway behind a symmetric NAT reports NAT_TYPE_SYMMETRIC and requires a relay', async () => {
    const { nat, publicIp } = await natStatusBehind('sym', 'symmetric')
    assert.equal(nat.natType, 'NAT_TYPE_SYMMETRIC')
    assert.equal(nat.requiresRelay, true)
    // One address, two ports: the mapping changed with the destination.
    assert.equal(nat.publicAddrs.length, 2)
    for (const a of nat.publicAddrs) assert.ok(a.startsWith(`${publicIp}:`), a)
  })

  it('nat - with one relay and no --stun the relay host is the only observer: NAT_TYPE_UNKNOWN', async () => {
    const host = await tb.host('one', 'symmetric')
    const gw = await tb.gateway(host, ['--relay', relays[0]!.multiaddr])
    try {
      await gw.proc.waitFor(/"msg":"nat status"/, 30_000)
      const nat = (await tb.grpcurl(host, gw.api, 'stargate.v1.GatewayService/GetStatus')).natStatus as NatStatusJson
      assert.equal(nat.natType, 'NAT_TYPE_UNKNOWN')
      // The observer was the relay's host at the default STUN port, and it answered.
      assert.equal(nat.publicAddrs.length, 1)
      assert.ok(nat.publicAddrs[0]!.startsWith(`${host.publicIp}:`), nat.publicAddrs[0])
      await gw.proc.waitFor(new RegExp(`"observers":\\["${relays[0]!.host.ip.replaceAll('.', '\\.')}:3478"\\]`))
    } finally {
      await gw.proc.stop()
    }
  })

  it('nat - the firewall drops silently: non-allowed hosts time out, the relay host is reachable', async () => {
    const [r1, r2] = relays as [NetnsRelay, NetnsRelay]
    const fw = await firewalled()
    // Port 9 has no listener on relay2's host: without the firewall the kernel answers with a RST.
    const control = await tb.tcpProbe(tb.get('relay1'), r2.host.ip, 9, 1_500)
    assert.equal(control, 'refused')
    const dropped = await tb.tcpProbe(fw, r2.host.ip, 9, 1_500)
    assert.equal(dropped, 'timeout')
    const droppedListening = await tb.tcpProbe(fw, r2.host.ip, 4001, 1_500)
    assert.equal(droppedListening, 'timeout')
    const allowed = await tb.tcpProbe(fw, r1.host.ip, 4001, 5_000)
    assert.equal(allowed, 'connected')
  })

  it('nat - behind the firewall only the allowed observer answers: NAT_TYPE_UNKNOWN', async () => {
    const fw = await firewalled()
    const gw = await tb.gateway(fw, ['--relay', relays[0]!.multiaddr, ...relays.flatMap((r) => ['--stun', r.stun])])
    try {
      const [line] = await gw.proc.waitFor(/^\{.*"msg":"nat status".*\}$/, 30_000)
      // The allowed relay's STUN answered; the other one's packets were dropped (no answer, no error).
      const logged = JSON.parse(line) as { observations: Array<{ observer: string; mapped?: unknown }> }
      assert.ok(logged.observations.find((o) => o.observer === relays[0]!.stun)?.mapped != null)
      const dropped = logged.observations.find((o) => o.observer === relays[1]!.stun)
      assert.ok(dropped != null && dropped.mapped == null)
      const nat = (await tb.grpcurl(fw, gw.api, 'stargate.v1.GatewayService/GetStatus')).natStatus as NatStatusJson
      assert.equal(nat.natType, 'NAT_TYPE_UNKNOWN')
      assert.equal(nat.requiresRelay, false)
      assert.deepEqual(nat.publicAddrs.length, 1)
      assert.ok(nat.publicAddrs[0]!.startsWith(`${fw.publicIp}:`), nat.publicAddrs[0])
    } finally {
      await gw.proc.stop()
    }
  })
})
