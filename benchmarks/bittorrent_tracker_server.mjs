// The npm bittorrent-tracker HTTP server, for the benchmarks (HTTP only: no UDP, no WebSocket,
// no stats page). The harness copies this file next to the node_modules it installed, because
// `bittorrent-tracker/server` must be resolved from there (the package root pulls in a WebRTC
// module that needs a native build).
//
//   node server.mjs --port 8000 [--host 127.0.0.1] [--peers-cache 1000]
import Server from 'bittorrent-tracker/server'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
}
const port = Number(args.port)
const host = args.host || '127.0.0.1'

const server = new Server({
  http: true,
  udp: false,
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
server.listen(port, host, () => {
  console.log(`bittorrent-tracker listening on ${host}:${port}`)
})
const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
