// Two browser peers share a file through a WebSocket tracker, over WebRTC on loopback.
//
//   node webtorrent_e2e.mjs --chromium PATH --tracker ws://127.0.0.1:PORT/announce \
//        --input FILE --output FILE [--timeout 60]
//
// Debian's chromium, driven by puppeteer-core, loads npm webtorrent's browser bundle in two
// browser contexts (pages of one origin would share WebTorrent's piece store, and the second
// would "download" from disk). One seeds --input with --tracker as its only tracker; the other
// adds the magnet link and downloads it; its bytes go to --output. Prints one JSON line:
// {ok, size, received, seconds, magnet, warnings}. `received` is what the leecher got from
// peers: at least the file's size proves the bytes came over WebRTC.
//
// What WebRTC on loopback needs here (../shared/CLIENTS.md): no STUN servers, no mDNS host
// candidates (--disable-features=WebRtcHideLocalIpsWithMdns), and the IPv4 host candidates
// rewritten to 127.0.0.1 (Chromium advertises the default-route address, not loopback).
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import puppeteer from 'puppeteer-core'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const here = path.dirname(fileURLToPath(import.meta.url))
const bundle = fs.readFileSync(path.join(here, 'node_modules', 'webtorrent', 'dist', 'webtorrent.min.js'))
const timeoutMs = Number(args.timeout || 60) * 1000

// Runs before the module loads: every local description the page reads has its IPv4 host
// candidates (and connection lines) on 127.0.0.1.
const PATCH = `
(() => {
  const fix = sdp => sdp
    .replace(/(a=candidate:\\S+ \\d+ udp \\d+ )(\\d+\\.\\d+\\.\\d+\\.\\d+)( \\d+ typ host)/gi, '$1127.0.0.1$3')
    .replace(/c=IN IP4 \\d+\\.\\d+\\.\\d+\\.\\d+/g, 'c=IN IP4 127.0.0.1')
  const proto = RTCPeerConnection.prototype
  const local = Object.getOwnPropertyDescriptor(proto, 'localDescription')
  Object.defineProperty(proto, 'localDescription', {
    configurable: true,
    get () {
      const d = local.get.call(this)
      return d && new RTCSessionDescription({ type: d.type, sdp: fix(d.sdp) })
    }
  })
})()
`
const PAGE = `<!doctype html><meta charset="utf-8"><title>peer</title>
<script>${PATCH}</script>
<script type="module">import WebTorrent from '/webtorrent.min.js'; window.WebTorrent = WebTorrent; window.ready = true</script>`

const server = http.createServer((req, res) => {
  if (req.url === '/webtorrent.min.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(bundle)
  } else {
    res.writeHead(200, { 'Content-Type': 'text/html' }).end(PAGE)
  }
})
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
const origin = `http://127.0.0.1:${server.address().port}/`

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'jl-chromium-'))
const browser = await puppeteer.launch({
  executablePath: args.chromium,
  headless: true,
  userDataDir: path.join(home, 'profile'),
  env: {
    ...process.env,
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, 'config'),
    XDG_CACHE_HOME: path.join(home, 'cache'),
    XDG_DATA_HOME: path.join(home, 'data'),
    XDG_RUNTIME_DIR: home
  },
  args: [
    '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
    '--disable-features=WebRtcHideLocalIpsWithMdns'
  ]
})

let result
const started = Date.now()
const timer = setTimeout(() => finish({ ok: false, error: `timed out after ${timeoutMs / 1000} s` }), timeoutMs)
async function finish (doc) {
  clearTimeout(timer)
  doc.seconds = (Date.now() - started) / 1000
  process.stdout.write(JSON.stringify(doc) + '\n')
  await browser.close().catch(() => {})
  server.close()
  fs.rmSync(home, { recursive: true, force: true })
  process.exit(doc.ok ? 0 : 1)
}

async function peerPage () {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  page.on('pageerror', err => process.stderr.write(`page error: ${err}\n`))
  await page.goto(origin)
  await page.waitForFunction('window.ready === true')
  return page
}

try {
  const input = fs.readFileSync(args.input)
  const seeder = await peerPage()
  const leecher = await peerPage()
  const tracker = args.tracker
  const magnet = await seeder.evaluate(async (tracker, b64) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0))
    window.warnings = []
    const client = new WebTorrent({ tracker: { rtcConfig: { iceServers: [] } } })
    client.on('error', e => window.warnings.push(String(e)))
    return new Promise(resolve => {
      const torrent = client.seed(new File([bytes], 'payload.bin'), { announce: [tracker] }, t => resolve(t.magnetURI))
      torrent.on('warning', e => window.warnings.push(String(e)))
    })
  }, tracker, input.toString('base64'))
  const got = await leecher.evaluate(async (magnet, tracker) => {
    window.warnings = []
    const client = new WebTorrent({ tracker: { rtcConfig: { iceServers: [] } } })
    client.on('error', e => window.warnings.push(String(e)))
    const torrent = client.add(magnet, { announce: [tracker] })
    torrent.on('warning', e => window.warnings.push(String(e)))
    await new Promise(resolve => torrent.on('done', resolve))
    const data = new Uint8Array(await torrent.files[0].arrayBuffer())
    let s = ''
    for (let i = 0; i < data.length; i += 0x8000) s += String.fromCharCode(...data.subarray(i, i + 0x8000))
    return { b64: btoa(s), received: torrent.received, peers: torrent.numPeers, warnings: window.warnings }
  }, magnet, tracker)
  const output = Buffer.from(got.b64, 'base64')
  fs.writeFileSync(args.output, output)
  const seederWarnings = await seeder.evaluate(() => window.warnings)
  result = {
    ok: true,
    size: output.length,
    received: got.received,
    magnet,
    warnings: [...got.warnings, ...seederWarnings]
  }
} catch (err) {
  result = { ok: false, error: String(err && err.stack || err) }
}
await finish(result)
