import { isIPv6 } from 'node:net'

/**
 * The key per-IP limits count under: an IPv4 address as is, an IPv6 address by its /64 prefix (one host or
 * site gets a whole /64, so counting single IPv6 addresses would let it take any number of slots), an
 * IPv4-mapped IPv6 address as its IPv4 address.
 */
export function ipKey(ip: string): string {
  if (!isIPv6(ip)) return ip
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped != null) return mapped[1]!
  const [head = '', tail] = ip.split('::')
  const groups = head === '' ? [] : head.split(':')
  if (tail != null) {
    const rest = tail === '' ? [] : tail.split(':')
    // An embedded IPv4 suffix (::1.2.3.4) stands for two groups.
    const width = rest.length + (rest.at(-1)?.includes('.') === true ? 1 : 0)
    groups.push(...new Array<string>(8 - groups.length - width).fill('0'), ...rest)
  }
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`
}
