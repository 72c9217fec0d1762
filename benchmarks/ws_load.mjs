// A WebTorrent-style load generator for benchmarks/websocket.py (the `ws` package that
// bittorrent-tracker brings; copied next to its node_modules).
//
//   node ws_load.mjs throughput --url ws://127.0.0.1:P/announce --conns 200 --swarms 20
//        --offers 5 --seconds 10
//     Every socket joins its swarm, then each sends announces with `offers` offers, one at a
//     time (the next when the answer arrives). Prints {announces, offers_received, seconds,
//     failures, rate} as JSON.
//   node ws_load.mjs idle --url ... --conns 10000 --swarms 1000
//     Opens the sockets, each announces once (no offer); prints {"ready": N} and holds them
//     until stdin closes, then {"closed": N, "lost": K}.
import WebSocket from 'ws'
import crypto from 'node:crypto'

const mode = process.argv[2]
const args = {}
for (let i = 3; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const url = args.url
const conns = Number(args.conns || 100)
const swarms = Number(args.swarms || 10)
const nOffers = Number(args.offers || 5)
const seconds = Number(args.seconds || 10)

const bin = bytes => String.fromCharCode(...bytes)
const infoHashes = Array.from({ length: swarms }, (_, i) => bin(crypto.createHash('sha1').update(`swarm ${i}`).digest()))
// An SDP of the size browsers send (a few hundred bytes with one host candidate).
const SDP = 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n' +
  'a=msid-semantic: WMS\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n' +
  'a=candidate:1 1 udp 2113937151 127.0.0.1 54321 typ host generation 0\r\na=ice-ufrag:abcd\r\n' +
  'a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\na=fingerprint:sha-256 ' +
  '00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n' +
  'a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n'

function open (i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false })
    ws.peerId = bin(crypto.randomBytes(20))
    ws.infoHash = infoHashes[i % swarms]
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

function announce (ws, offers, event) {
  const doc = { action: 'announce', info_hash: ws.infoHash, peer_id: ws.peerId, numwant: offers, uploaded: 0, downloaded: 0, left: 1000 }
  if (event) doc.event = event
  if (offers) {
    doc.offers = []
    for (let k = 0; k < offers; k++) doc.offers.push({ offer_id: bin(crypto.randomBytes(20)), offer: { type: 'offer', sdp: SDP } })
  }
  ws.send(JSON.stringify(doc))
}

// Each socket announces as soon as it is open, as a browser does (the tracker closes a socket
// that says nothing for a while); resolves once every socket has its answer.
async function openAll () {
  const sockets = []
  const batch = 200
  for (let i = 0; i < conns; i += batch) {
    const opened = await Promise.all(Array.from({ length: Math.min(batch, conns - i) }, async (_, k) => {
      const ws = await open(i + k)
      await new Promise(resolve => {
        ws.once('message', () => resolve())
        announce(ws, 0, 'started')
      })
      return ws
    }))
    sockets.push(...opened)
  }
  return sockets
}

if (mode === 'throughput') {
  const sockets = await openAll()
  let announces = 0; let offersReceived = 0; let failures = 0; let counting = false; let running = true
  // Each socket sends the same announce over and over (fresh offer ids would only cost the
  // generator time), serialised once; what comes back is told apart without parsing it.
  const OFFER = Buffer.from('"offer":')
  const FAILURE = Buffer.from('"failure reason"')
  for (const ws of sockets) {
    const doc = { action: 'announce', info_hash: ws.infoHash, peer_id: ws.peerId, numwant: nOffers, uploaded: 0, downloaded: 0, left: 1000, offers: [] }
    for (let k = 0; k < nOffers; k++) doc.offers.push({ offer_id: bin(crypto.randomBytes(20)), offer: { type: 'offer', sdp: SDP } })
    ws.message = JSON.stringify(doc)
    ws.on('message', data => {
      if (data.includes(OFFER)) { if (counting) offersReceived++; return }
      if (data.includes(FAILURE)) failures++
      if (counting) announces++
      if (running) ws.send(ws.message)
    })
  }
  for (const ws of sockets) ws.send(ws.message)
  await new Promise(resolve => setTimeout(resolve, 2000)) // warm-up
  // The orchestrator reads the tracker's CPU time at these two lines.
  console.log(JSON.stringify({ window: 'start' }))
  counting = true
  const t0 = process.hrtime.bigint()
  await new Promise(resolve => setTimeout(resolve, seconds * 1000))
  counting = false
  console.log(JSON.stringify({ window: 'end' }))
  running = false
  const dt = Number(process.hrtime.bigint() - t0) / 1e9
  console.log(JSON.stringify({ announces, offers_received: offersReceived, seconds: dt, failures, rate: announces / dt }))
  for (const ws of sockets) ws.terminate()
  process.exit(0)
} else if (mode === 'idle') {
  const sockets = await openAll()
  let lost = 0
  for (const ws of sockets) ws.on('close', () => { lost++ })
  console.log(JSON.stringify({ ready: sockets.length }))
  process.stdin.resume()
  process.stdin.on('end', () => {
    console.log(JSON.stringify({ closed: sockets.length, lost }))
    for (const ws of sockets) ws.terminate()
    process.exit(0)
  })
} else {
  console.error('mode: throughput or idle')
  process.exit(2)
}
