// node-datachannel as a WHIP-style answering server for ugate's webrtc dialer.
// POST /.well-known/ugate/webrtc with an SDP offer -> 201 + answer. Each data channel echoes
// its messages; the empty message (FIN) is echoed too, after the data. Prints {"port": N}
// once listening, then {"label": ...} per channel; runs until killed.
'use strict';
const http = require('http');
const ndc = require('node-datachannel');

const keep = new Set(); // references to peers and channels (see PEERS.md)
let n = 0;
const server = http.createServer((req, res) => {
  if (req.method !== 'POST') { res.writeHead(405); res.end(); return; }
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', () => {
    const offer = Buffer.concat(parts).toString();
    const pc = new ndc.PeerConnection('answer' + (++n), { iceServers: [], bindAddress: '127.0.0.1' });
    keep.add(pc);
    pc.onDataChannel((dc) => {
      keep.add(dc);
      process.stdout.write(JSON.stringify({ label: dc.getLabel() }) + '\n');
      dc.onMessage((m) => {
        const b = Buffer.isBuffer(m) ? m : Buffer.from(m);
        dc.sendMessageBinary(b);
      });
      dc.onClosed(() => keep.delete(dc));
    });
    let answered = false;
    const answer = () => {
      if (answered) return;
      answered = true;
      const d = pc.localDescription();
      res.writeHead(201, { 'content-type': 'application/sdp', location: '/.well-known/ugate/webrtc/' + n });
      res.end(d.sdp);
    };
    pc.onGatheringStateChange((s) => { if (s === 'complete') answer(); });
    pc.setRemoteDescription(offer, 'offer');
    if (pc.gatheringState() === 'complete') answer();
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
