// The page side of bench_webtransport.py: echo streams over one WebTransport session, timed
// in the page (a preamble first when `pre` names a destination: ugate; none: the bare server).
function varint(n) { const b = []; do { let x = n & 0x7f; n >>>= 7; if (n) x |= 0x80; b.push(x); } while (n); return b; }
function frame(text) { const t = new TextEncoder().encode(text); return new Uint8Array([1, ...varint(t.length), ...t]); }
async function open(wt, pre) {
  const s = await wt.createBidirectionalStream();
  const w = s.writable.getWriter(), r = s.readable.getReader();
  let extra = 0;
  if (pre) {
    await w.write(frame(pre));
    let buf = new Uint8Array();
    while (buf.length < 2 || buf.length < 2 + buf[1]) {
      const { value, done } = await r.read(); if (done) throw new Error('no status');
      const b = new Uint8Array(buf.length + value.length); b.set(buf); b.set(value, buf.length); buf = b;
    }
    const st = new TextDecoder().decode(buf.slice(2, 2 + buf[1]));
    if (st !== '200') throw new Error('status ' + st);
    extra = buf.length - 2 - buf[1];
  }
  return { w, r, extra };
}
async function echo(wt, pre, n) {
  const { w, r, extra } = await open(wt, pre);
  const chunk = new Uint8Array(65536);
  const sending = (async () => { for (let i = 0; i < n; i += chunk.length) await w.write(chunk.subarray(0, Math.min(chunk.length, n - i))); await w.close(); })();
  let got = extra;
  for (;;) { const { value, done } = await r.read(); if (done) break; got += value.length; }
  await sending;
  if (got !== n) throw new Error(`echoed ${got} of ${n}`);
}
async function bench(url, hash, pre, n, streams, opens) {
  const wt = new WebTransport(url, { serverCertificateHashes: [{ algorithm: 'sha-256',
    value: new Uint8Array(hash.match(/../g).map(x => parseInt(x, 16))) }] });
  await wt.ready;
  await echo(wt, pre, 65536);  // warm
  let t = performance.now(); await echo(wt, pre, n); const bulk = n / 1048576 / ((performance.now() - t) / 1000);
  t = performance.now(); await Promise.all(Array.from({ length: streams }, () => echo(wt, pre, n / streams)));
  const multi = n / 1048576 / ((performance.now() - t) / 1000);
  t = performance.now(); for (let i = 0; i < opens; i++) await echo(wt, pre, 1);
  const rate = opens / ((performance.now() - t) / 1000);
  wt.close();
  return { bulk, multi, rate };
}
// The same page over ugate-ws: one WebSocket per stream to /.well-known/ugate/ws/<pre>, binary
// messages carry the bytes, an empty one is the half-close. An echo is done when every byte
// came back: Chromium 156 now and then never sends a page's empty message (ugate counted the
// data frames of such a socket, byte for byte, and nothing after them; seen over HTTP/1.1 with
// four sockets in parallel, as over HTTP/2 in ugate-ws's tests), so the page does not wait
// for the origin's end of stream to come back.
function wsEcho(base, pre, n) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base}/.well-known/ugate/ws/${pre}`);
    ws.binaryType = 'arraybuffer';
    let got = 0;
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onclose = (ev) => { if (got !== n || !ev.wasClean) reject(new Error(`closed ${ev.code}, echoed ${got} of ${n}`)); };
    ws.onmessage = (ev) => {
      const len = ev.data.byteLength;
      if (len === 0) { if (got !== n) reject(new Error(`echoed ${got} of ${n}`)); return; }
      got += len;
      if (got === n) { resolve(); ws.close(1000); }
    };
    ws.onopen = async () => {
      const chunk = new Uint8Array(65536);
      for (let i = 0; i < n; i += chunk.length) {
        while (ws.bufferedAmount > (1 << 20)) await new Promise(r => setTimeout(r, 1));
        ws.send(chunk.subarray(0, Math.min(chunk.length, n - i)));
      }
      ws.send(new Uint8Array(0));
    };
  });
}
async function benchWs(base, pre, n, streams, opens) {
  await wsEcho(base, pre, 65536);  // warm
  let t = performance.now(); await wsEcho(base, pre, n); const bulk = n / 1048576 / ((performance.now() - t) / 1000);
  t = performance.now(); await Promise.all(Array.from({ length: streams }, () => wsEcho(base, pre, n / streams)));
  const multi = n / 1048576 / ((performance.now() - t) / 1000);
  t = performance.now(); for (let i = 0; i < opens; i++) await wsEcho(base, pre, 1);
  const rate = opens / ((performance.now() - t) / 1000);
  return { bulk, multi, rate };
}
