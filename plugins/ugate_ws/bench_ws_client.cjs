// bench_ws.py's client and targets (Node, npm ws from tests/js).
'use strict';
const net = require('net');
const WebSocket = require('ws');
const [mode, kind, url, arg] = process.argv.slice(2);
// the targets: a sink that answers one byte after N bytes, and a 1-byte echo
function sink(n) {
  return net.createServer((c) => { let got = 0;
    c.on('data', (d) => { got += d.length; if (got >= n) { c.write(Buffer.from([1])); got = -1e18; } });
    c.on('error', () => {}); });
}
function echo() {
  return net.createServer((c) => { c.on('data', (d) => c.write(d)); c.on('error', () => {}); });
}
const listen = (srv) => new Promise((res) => srv.listen(0, '127.0.0.1', () => res(srv.address().port)));
const block = Buffer.alloc(65536, 7);
// the same client for every server: an all-zero mask, which ws then does not apply (so the
// client's JavaScript masking is not what is measured); servers unmask as always
const WS_OPTS = { perMessageDeflate: false, generateMask: (m) => m.fill(0) };
function bulkWs(u, n) {
  return new Promise((res, rej) => { const ws = new WebSocket(u, WS_OPTS);
    let t0; ws.on('open', () => { t0 = process.hrtime.bigint(); let sent = 0;
      const pump = () => { while (sent < n) { ws.send(block); sent += block.length;
        if (ws.bufferedAmount > 4 * 1048576) { setTimeout(pump, 1); return; } } };
      pump(); });
    ws.on('message', () => { const dt = Number(process.hrtime.bigint() - t0) / 1e9; ws.terminate(); res(dt); });
    ws.on('error', rej); });
}
function bulkTcp(port, n) {
  return new Promise((res, rej) => { const t0 = process.hrtime.bigint();
    const c = net.connect(port, '127.0.0.1', () => { let sent = 0;
      const pump = () => { while (sent < n) { sent += block.length; if (!c.write(block)) { c.once('drain', pump); return; } } };
      pump(); });
    c.on('data', () => { const dt = Number(process.hrtime.bigint() - t0) / 1e9; c.destroy(); res(dt); });
    c.on('error', rej); });
}
function oneWs(u) {
  return new Promise((res, rej) => { const ws = new WebSocket(u, WS_OPTS);
    ws.on('open', () => ws.send(Buffer.from([9])));
    ws.on('message', () => { ws.close(); });
    ws.on('close', res); ws.on('error', rej); });
}
function oneTcp(port) {
  return new Promise((res, rej) => { const c = net.connect(port, '127.0.0.1', () => c.write(Buffer.from([9])));
    c.on('data', () => c.end()); c.on('close', res); c.on('error', rej); });
}
async function main() {
  const n = Number(arg);
  if (mode === 'targets') {  // the targets, in a process of their own
    const sp = await listen(sink(n)); const ep = await listen(echo());
    process.stdout.write(JSON.stringify({ sink: sp, echo: ep }) + '\n');
    return;
  }
  // the client: one command per line on stdin (JSON), one result per line on stdout
  process.stdout.write('{}\n');
  const rl = require('readline').createInterface({ input: process.stdin });
  for await (const line of rl) {
    const cmd = JSON.parse(line); let out;
    if (cmd.op === 'bulk') out = cmd.tcp ? await bulkTcp(cmd.port, n) : await bulkWs(cmd.url, n);
    else { const t0 = Date.now(); let k = 0;
      while (Date.now() - t0 < cmd.ms) { if (cmd.tcp) await oneTcp(cmd.port); else await oneWs(cmd.url); k++; }
      out = k / ((Date.now() - t0) / 1000); }
    process.stdout.write(JSON.stringify({ out }) + '\n');
  }
}
main();
