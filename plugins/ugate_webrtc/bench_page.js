// Body of an async function (browser_run): Chromium's data channels, bulk and open latency.
// SPEC: {mode: "anchor" | "ugate", url, target, total, chans, opens}. "anchor": a second
// RTCPeerConnection in this page answers and counts; "ugate": ugate's signaling at SPEC.url.
const MSG = 65536;
const pc = new RTCPeerConnection({ iceServers: [] });
let far = null;
if (SPEC.mode === 'anchor') {
  far = new RTCPeerConnection({ iceServers: [] });
  far.ondatachannel = (ev) => {
    const dc = ev.channel;
    dc.binaryType = 'arraybuffer';
    dc.onmessage = (m) => { if (m.data.byteLength === 0) { dc.send(new Uint8Array([111, 107])); dc.send(new Uint8Array(0)); } };
  };
}
const waitOpen = (dc) => new Promise((r, j) => { dc.onopen = () => r(dc); dc.onerror = (e) => j(new Error('channel error')); });
const first = pc.createDataChannel(SPEC.target);
const firstOpen = waitOpen(first);
await pc.setLocalDescription(await pc.createOffer());
if (SPEC.mode === 'anchor') {
  await far.setRemoteDescription(pc.localDescription);
  await far.setLocalDescription(await far.createAnswer());
  pc.onicecandidate = (e) => e.candidate && far.addIceCandidate(e.candidate);
  far.onicecandidate = (e) => e.candidate && pc.addIceCandidate(e.candidate);
  await pc.setRemoteDescription(far.localDescription);
} else {
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
  const resp = await fetch(SPEC.url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription.sdp });
  const text = await resp.text();
  if (resp.status !== 201) throw new Error('signaling ' + resp.status + ': ' + text);
  await pc.setRemoteDescription({ type: 'answer', sdp: text });
}
await firstOpen;
const chans = [first];
for (let i = 1; i < SPEC.chans; i++) chans.push(await waitOpen(pc.createDataChannel(SPEC.target)));
const buf = new Uint8Array(MSG).fill(97);
const per = Math.floor(SPEC.total / SPEC.chans);
const transfer = (dc) => new Promise((resolve) => {
  dc.binaryType = 'arraybuffer';
  let replied = false;
  dc.onmessage = (m) => { if (m.data.byteLength) replied = true; else if (replied) resolve(); };
  dc.bufferedAmountLowThreshold = 1 << 20;
  let sent = 0;
  const pump = () => {
    while (sent < per && dc.bufferedAmount <= (4 << 20)) {
      const k = Math.min(MSG, per - sent);
      dc.send(k === MSG ? buf : buf.subarray(0, k));
      sent += k;
    }
    if (sent >= per) { dc.onbufferedamountlow = null; dc.send(new Uint8Array(0)); }
  };
  dc.onbufferedamountlow = pump;
  pump();
});
const t0 = performance.now();
await Promise.all(chans.map(transfer));
const bulk_s = (performance.now() - t0) / 1000;
const open_ms = [];
for (let i = 0; i < SPEC.opens; i++) {
  const t = performance.now();
  const dc = await waitOpen(pc.createDataChannel(SPEC.target));
  open_ms.push(performance.now() - t);
  dc.close();
}
pc.close(); if (far) far.close();
return { bulk_s, bytes: per * SPEC.chans, open_ms };
