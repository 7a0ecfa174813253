// node-datachannel as the offering client against ugate's WebRTC signaling.
// argv: signaling URL, then one destination label per channel; env SIZE (bytes per channel).
// Sends SIZE bytes (a pattern) per channel in 16 KiB messages, then the empty message (FIN),
// collects the echo until the far FIN and prints JSON {labels: {label: {len, sha256, fin}}}.
'use strict';
const crypto = require('crypto');
const ndc = require('node-datachannel');

const [url, ...labels] = process.argv.slice(2);
const SIZE = Number(process.env.SIZE || 1 << 20);
const CHUNK = 16384;

function pattern(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed * 13 + (i >> 8)) & 0xff;
  return b;
}

async function main() {
  const pc = new ndc.PeerConnection('offer', { iceServers: [], bindAddress: '127.0.0.1', ...(process.env.CERT_TYPE ? { certificateType: process.env.CERT_TYPE } : {}) });
  const gathered = new Promise((res) => pc.onGatheringStateChange((s) => { if (s === 'complete') res(); }));
  const results = {};
  const done = [];
  const chans = labels.map((label, k) => {
    const dc = pc.createDataChannel(label);
    const got = [];
    const want = pattern(SIZE, k);
    results[label] = { len: 0, sha256: '', fin: false, sent_sha256: crypto.createHash('sha256').update(want).digest('hex') };
    done.push(new Promise((res, rej) => {
      dc.onMessage((m) => {
        const b = Buffer.isBuffer(m) ? m : Buffer.from(m);
        if (b.length === 0) {
          const all = Buffer.concat(got);
          Object.assign(results[label], { len: all.length, sha256: crypto.createHash('sha256').update(all).digest('hex'), fin: true });
          res();
        } else got.push(b);
      });
      dc.onClosed(() => res());
      dc.onError((e) => rej(new Error(String(e))));
    }));
    dc.onOpen(async () => {
      dc.setBufferedAmountLowThreshold(1 << 20);
      for (let i = 0; i < want.length; i += CHUNK) {
        while (dc.bufferedAmount() > (4 << 20)) await new Promise((r) => setTimeout(r, 5));
        dc.sendMessageBinary(want.subarray(i, i + CHUNK));
      }
      dc.sendMessageBinary(Buffer.alloc(0));
    });
    return dc;
  });
  pc.setLocalDescription();
  await gathered;
  const offer = pc.localDescription();
  const resp = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: offer.sdp });
  const text = await resp.text();
  if (resp.status !== 201) throw new Error(`signaling answered ${resp.status}: ${text}`);
  pc.setRemoteDescription(text, 'answer');
  await Promise.all(done);
  const del = await fetch(new URL(resp.headers.get('location'), url), { method: 'DELETE' });
  process.stdout.write(JSON.stringify({ labels: results, deleted: del.status, keep: chans.length }) + '\n');
  pc.close();
}
main().then(() => process.exit(0), (e) => { process.stdout.write(JSON.stringify({ error: String(e) }) + '\n'); process.exit(1); });
