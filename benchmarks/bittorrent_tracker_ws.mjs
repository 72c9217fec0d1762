// The npm bittorrent-tracker server with its WebSocket tracker on (and HTTP, which carries the
// upgrade), for benchmarks/websocket.py. Copied next to the node_modules benchlib installed.
//
//   node bittorrent_tracker_ws.mjs --port 8000 [--host 127.0.0.1]
import Server from 'bittorrent-tracker/server'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const server = new Server({
  http: true, udp: false, ws: true, stats: false, trustProxy: false, interval: 1800 * 1000
})
server.on('error', err => { console.error(`bittorrent-tracker error: ${err.message}`); process.exit(1) })
server.on('warning', () => {})
server.listen(Number(args.port), args.host || '127.0.0.1', () => console.log('listening'))
const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
