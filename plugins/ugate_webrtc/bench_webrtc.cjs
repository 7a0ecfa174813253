// Data-channel bulk and channel-open latency with node-datachannel as the offering client.
// argv: mode ("anchor": against a node-datachannel answerer in this process; "ugate": against
// ugate's signaling URL), url, target label, total bytes, channels, opens.
// Each channel sends total/channels bytes in 64 KiB messages, then the empty message; the far
// side answers "ok" and the empty message once it has them all. Prints one JSON line:
// {bulk_s, bytes, open_ms: [...]}.
'use strict';
const http = require('http');
const ndc = require('node-datachannel');

const [mode, url, target, totalS, chansS, opensS] = process.argv.slice(2);
const TOTAL = Number(totalS), CH = Number(chansS), OPENS = Number(opensS);
const MSG = 65536;
// env OPEN_GAP_MS: idle this long between channel opens (0: back to back)
const OPEN_GAP_MS = Number(process.env.OPEN_GAP_MS || 0);
const keep = new Set();
const cfg = { iceServers: [], bindAddress: '127.0.0.1' };

function sinkChannel(dc) { // the anchor's far side: count, then "ok" + FIN
  keep.add(dc);
  dc.onMessage((m) => {
    if (m.length === 0) { dc.sendMessageBinary(Buffer.from('ok')); dc.sendMessageBinary(Buffer.alloc(0)); }
  });
}

async function signal(offerSdp) {
  if (mode === 'anchor') {
    const pc = new ndc.PeerConnection('answer', cfg);
    keep.add(pc);
    pc.onDataChannel(sinkChannel);
    const done = new Promise((r) => pc.onGatheringStateChange((s) => { if (s === 'complete') r(); }));
    pc.setRemoteDescription(offerSdp, 'offer');
    if (pc.gatheringState() !== 'complete') await done;
    return pc.localDescription().sdp;
  }
  const resp = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: offerSdp });
  const text = await resp.text();
  if (resp.status !== 201) throw new Error(`signaling ${resp.status}: ${text}`);
  return text;
}

function openChannel(pc, label) {
  return new Promise((res, rej) => {
    const dc = pc.createDataChannel(label);
    keep.add(dc);
    dc.onOpen(() => res(dc));
    dc.onError((e) => rej(new Error(String(e))));
  });
}

function transfer(dc, n) {
  return new Promise((res) => {
    let replied = false;
    dc.onMessage((m) => { if (m.length) replied = true; else if (replied) res(); });
    const buf = Buffer.alloc(MSG, 0x61);
    (async () => {
      for (let sent = 0; sent < n;) {
        // onBufferedAmountLow is not reliable here: poll (1 ms) above 1 MiB
        while (dc.bufferedAmount() > (1 << 20)) await new Promise((r) => setTimeout(r, 1));
        const k = Math.min(MSG, n - sent);
        dc.sendMessageBinary(k === MSG ? buf : buf.subarray(0, k));
        sent += k;
      }
      dc.sendMessageBinary(Buffer.alloc(0));
    })();
  });
}

async function main() {
  const pc = new ndc.PeerConnection('offer', cfg);
  keep.add(pc);
  const gathered = new Promise((r) => pc.onGatheringStateChange((s) => { if (s === 'complete') r(); }));
  const first = pc.createDataChannel(target); // an m=application section to offer
  keep.add(first);
  const opened = new Promise((r) => first.onOpen(r));
  pc.setLocalDescription();
  await gathered;
  pc.setRemoteDescription(await signal(pc.localDescription().sdp), 'answer');
  await opened;
  const chans = [first];
  for (let i = 1; i < CH; i++) chans.push(await openChannel(pc, target));
  const t0 = process.hrtime.bigint();
  await Promise.all(chans.map((dc) => transfer(dc, Math.floor(TOTAL / CH))));
  const bulk_s = Number(process.hrtime.bigint() - t0) / 1e9;
  const open_ms = [];
  for (let i = 0; i < OPENS; i++) {
    if (OPEN_GAP_MS) await new Promise((r) => setTimeout(r, OPEN_GAP_MS));
    const t = process.hrtime.bigint();
    const dc = await openChannel(pc, target);
    open_ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    dc.close();
  }
  process.stdout.write(JSON.stringify({ bulk_s, bytes: Math.floor(TOTAL / CH) * CH, open_ms }) + '\n');
  pc.close();
}
main().then(() => process.exit(0), (e) => { process.stdout.write(JSON.stringify({ error: String(e) }) + '\n'); process.exit(1); });
