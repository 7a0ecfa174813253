// WHIP-style signaling for the test pages (prefixed to them): offer every candidate at once
// (no trickle), POST the SDP to `url`, apply the answer; returns the response.
async function signal(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => {
    if (pc.iceGatheringState === 'complete') r();
    else pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); };
  });
  const resp = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp' },
                                  body: pc.localDescription.sdp });
  const answer = await resp.text();
  if (resp.status !== 201) throw new Error('signaling ' + resp.status + ': ' + answer);
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return resp;
}
