// Helpers for test_chromium.py's page scripts: the stream preamble (docs/preamble.md), the
// pattern (Python: wt_pattern), one echo stream that checks every byte.
function varint(n) { const b = []; do { let x = n & 0x7f; n >>>= 7; if (n) x |= 0x80; b.push(x); } while (n); return b; }
function frame(text) { const t = new TextEncoder().encode(text); return new Uint8Array([1, ...varint(t.length), ...t]); }
function pat(n, seed) { const a = new Uint8Array(n); for (let j = 0; j < n; j++) a[j] = (j * 31 + seed * 7 + (j >> 13)) & 255; return a; }
function hex(buf) { return [...new Uint8Array(buf)].map(b => b.toString(16).padStart(2, '0')).join(''); }
async function readStatus(reader, pending) {
  let buf = pending;
  for (;;) {
    if (buf.length >= 2 && buf[0] === 1) {
      const len = buf[1] & 0x7f;  // statuses are < 128 bytes: one varint byte
      if (buf.length >= 2 + len) return [new TextDecoder().decode(buf.slice(2, 2 + len)), buf.slice(2 + len)];
    }
    const { value, done } = await reader.read();
    if (done) return ['closed before a status', new Uint8Array()];
    const b = new Uint8Array(buf.length + value.length); b.set(buf); b.set(value, buf.length); buf = b;
  }
}
async function echo(wt, target, n, seed) {
  const s = await wt.createBidirectionalStream();
  const w = s.writable.getWriter(), r = s.readable.getReader();
  await w.write(frame(target));
  const [status, rest] = await readStatus(r, new Uint8Array());
  if (!status.startsWith('200')) return { status };
  const data = pat(n, seed);
  const sending = (async () => {
    for (let i = 0; i < n; i += 65536) await w.write(data.subarray(i, i + 65536));
    await w.close();
  })();
  const got = new Uint8Array(n + 1); let off = 0; let bad = -1;
  const take = (v) => { for (let k = 0; k < v.length; k++) { if (off + k >= n || v[k] !== data[off + k]) { if (bad < 0) bad = off + k; } } got.set(v.subarray(0, Math.max(0, Math.min(v.length, n + 1 - off))), off); off += v.length; };
  take(rest);
  for (;;) { const { value, done } = await r.read(); if (done) break; take(value); }
  await sending;
  return { status, bytes: off, first_mismatch: bad, sha256: hex(await crypto.subtle.digest('SHA-256', got.subarray(0, Math.min(off, n)))) };
}
