// Body of an async function run in Chromium (browser_run): an RTCPeerConnection offers
// channels to the destinations in SPEC.labels, signals to SPEC.url, sends SPEC.size bytes on
// each, half-closes (empty message) and collects the echo until the far half-close.
const pc = new RTCPeerConnection({ iceServers: [] });
const N = SPEC.size, CHUNK = 16384;
function pattern(n, seed) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed * 13 + (i >> 8)) & 0xff;
  return b;
}
async function hex(buf) {
  const d = await crypto.subtle.digest('SHA-256', buf);
  return Array.from(new Uint8Array(d)).map((x) => x.toString(16).padStart(2, '0')).join('');
}
const results = {};
const done = SPEC.labels.map((label, k) => new Promise((resolve, reject) => {
  const dc = pc.createDataChannel(label, { ordered: true });
  dc.binaryType = 'arraybuffer';
  const parts = []; let got = 0;
  dc.onmessage = async (ev) => {
    const b = new Uint8Array(ev.data);
    if (b.length === 0) {
      const all = new Uint8Array(got); let o = 0;
      for (const p of parts) { all.set(p, o); o += p.length; }
      results[label] = { len: got, sha256: await hex(all), sent: await hex(pattern(N, k)) };
      resolve();
    } else { parts.push(b); got += b.length; }
  };
  dc.onerror = (e) => reject(new Error('channel error ' + (e.error && e.error.message)));
  dc.onclose = () => resolve();
  dc.onopen = async () => {
    const want = pattern(N, k);
    dc.bufferedAmountLowThreshold = 1 << 20;
    for (let i = 0; i < N; i += CHUNK) {
      if (dc.bufferedAmount > (4 << 20)) await new Promise((r) => { dc.onbufferedamountlow = r; });
      dc.send(want.subarray(i, i + CHUNK));
    }
    dc.send(new Uint8Array(0));
  };
}));
const resp = await signal(pc, SPEC.url);  // page_signal.js
await Promise.all(done);
const mdns = (pc.localDescription.sdp.match(/\.local /g) || []).length;
return { results, mdns, location: resp.headers.get('location') };
