import { createServer } from "node:http";
import { launchRigBrowser, startPulse } from "../tests/harness/pulse.mjs";
function page() {
  window.run = async () => {
    const url = (s) => URL.createObjectURL(new Blob([s], { type: "text/javascript" }));
    const SENDW = `let n=0;onrtctransform=({transformer:t})=>{t.readable.pipeThrough(new TransformStream({transform(f,c){n++;
      if(n===3){const m=f.getMetadata();postMessage({meta:JSON.stringify(m), proto:Object.getOwnPropertyNames(Object.getPrototypeOf(f)).join(',')});}
      if(n%2){try{const m=f.getMetadata();f.setMetadata({...m,payloadType:13});f.data=new Uint8Array([127]).buffer;}catch(e){if(n<5)postMessage({err:String(e)})}}
      c.enqueue(f)}})).pipeTo(t.writable)}`;
    const RECVW = `let pts={};onrtctransform=({transformer:t})=>{t.readable.pipeThrough(new TransformStream({transform(f,c){const k=f.getMetadata().payloadType+':'+f.data.byteLength;pts[k]=(pts[k]||0)+1;c.enqueue(f)}})).pipeTo(t.writable)};setInterval(()=>postMessage(pts),500)`;
    const ctx = new AudioContext();
    const osc = ctx.createOscillator(); const dst = ctx.createMediaStreamDestination(); osc.connect(dst); osc.start();
    const a = new RTCPeerConnection(), b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const log = [];
    b.ontrack = (ev) => { const w = new Worker(url(RECVW)); w.onmessage = (e) => (log.recv = e.data); ev.receiver.transform = new RTCRtpScriptTransform(w); const el = document.createElement("audio"); el.srcObject = new MediaStream([ev.track]); el.play(); };
    const tr = a.addTransceiver(dst.stream.getAudioTracks()[0], { direction: "sendonly" });
    const sw = new Worker(url(SENDW)); sw.onmessage = (e) => log.push(e.data);
    tr.sender.transform = new RTCRtpScriptTransform(sw);
    const caps = RTCRtpSender.getCapabilities("audio").codecs;
    tr.setCodecPreferences(caps.filter((c) => c.mimeType === "audio/PCMU" || (c.mimeType === "audio/CN" && c.clockRate === 8000)));
    const offer = await a.createOffer(); log.push(offer.sdp.split("\r\n").filter((l) => l.startsWith("m=") || l.startsWith("a=rtpmap")).join(" | "));
    await a.setLocalDescription(offer); await b.setRemoteDescription(offer);
    const answer = await b.createAnswer(); await b.setLocalDescription(answer);
    const noCn = answer.sdp.replace(/^a=rtpmap:13 .*\r\n/m, "").replace(/^(m=audio \S+ \S+ [\d ]*?) 13(.*)$/m, "$1$2");
    log.push(noCn.split("\r\n").filter((l) => l.startsWith("m=")).join());
    await a.setRemoteDescription({ type: "answer", sdp: noCn });
    await new Promise((r) => setTimeout(r, 4000));
    let st; for (const r of (await b.getStats()).values()) if (r.type === "inbound-rtp") st = r;
    let os; for (const r of (await a.getStats()).values()) if (r.type === "outbound-rtp") os = r;
    return { log, recv: log.recv, in: st && { rx: st.packetsReceived, conc: st.concealedSamples, total: st.totalSamplesReceived, codec: st.codecId }, out: os && { sent: os.packetsSent } };
  };
}
const server = createServer((_q, r) => { r.setHeader("content-type", "text/html"); r.end(`<script>(${page})()</script>`); });
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pulse = startPulse();
const br = await launchRigBrowser(pulse, { args: [] });
try {
  const p = await br.context.newPage();
  await p.goto(`http://127.0.0.1:${server.address().port}/`);
  console.log(JSON.stringify(await p.evaluate(() => window.run()), null, 1));
} finally { await br.close(); pulse.stop(); server.close(); }
