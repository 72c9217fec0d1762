// The npm bittorrent-tracker server, for the benchmarks: HTTP only, or with `--udp PORT` UDP
// only (no WebSocket, no stats page either way). The harness copies this file next to the
// node_modules it installed, because `bittorrent-tracker/server` must be resolved from there
// (the package root pulls in a WebRTC module that needs a native build).
//
//   node server.mjs --port 8000 [--host 127.0.0.1] [--peers-cache 1000]
//   node server.mjs --udp 8001 [--host 127.0.0.1]
import Server from 'bittorrent-tracker/server'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
}
const udp = args.udp !== undefined
const port = Number(udp ? args.udp : args.port)
const host = args.host || '127.0.0.1'

const server = new Server({
  http: !udp,
  udp,
  ws: false,
  stats: false,
  trustProxy: false,
  interval: 1800 * 1000,
  // Peers kept per swarm (an LRU; the package's default is 1000).
  peersCacheLength: Number(args['peers-cache'] || 1000)
})
server.on('error', (err) => {
  console.error(`bittorrent-tracker error: ${err.message}`)
  process.exit(1)
})
server.on('warning', () => {})
// Over UDP it binds an IPv6 socket too: on ::1, so everything stays on loopback.
server.listen(port, udp ? { udp: host, udp6: '::1' } : host, () => {
  console.log(`bittorrent-tracker listening on ${host}:${port}${udp ? ' (UDP)' : ''}`)
})
const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
