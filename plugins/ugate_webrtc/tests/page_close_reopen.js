// Body of an async function run in Chromium (browser_run): on one RTCPeerConnection, SPEC.n
// times: open a channel to SPEC.label, echo one message, close it and wait for its close event.
const pc = new RTCPeerConnection({ iceServers: [] });
let dc = pc.createDataChannel(SPEC.label);  // the offer's m=application section
await signal(pc, SPEC.url);  // page_signal.js
const echoes = [], ids = [];
for (let i = 0; i < SPEC.n; i++) {
  if (i) dc = pc.createDataChannel(SPEC.label);
  dc.binaryType = 'arraybuffer';
  await new Promise((res, rej) => { dc.onopen = res; dc.onerror = (e) => rej(new Error('channel ' + i + ': ' + (e.error && e.error.message))); });
  const echo = new Promise((res) => { dc.onmessage = (ev) => res(new TextDecoder().decode(ev.data)); });
  dc.send(new TextEncoder().encode('ping ' + i));
  echoes.push(await echo);
  ids.push(dc.id);
  const closed = new Promise((res) => { dc.onclose = res; });
  dc.close();
  await closed;  // both directions reset: needs the gateway's answer and its own reset
}
return { echoes, ids, state: pc.connectionState };
