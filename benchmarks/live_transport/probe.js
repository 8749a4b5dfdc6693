// Injected before any page script (bench.py). The camera is a canvas: black, white for WHITE ms every PERIOD ms
// (the time of each black->white change in __probe.flashes). The speech that comes back is watched in Web Audio
// (the time its level first rises above 0.05 RMS after 300 ms of quiet, in __probe.beeps). Times: ms since the epoch.
// The speech is taken where each player hands it to the loudspeaker: Gradio's streaming <audio> element (the Live tab
// before its page player), fastrtc's WebRTC track, or the Live tab's Web Audio player (window.naturall2sLivePlayer).
(() => {
  const W = 640, H = 480, FPS = 25, PERIOD = 12000, WHITE = 400;  // ms
  const probe = window.__probe = {flashes: [], beeps: [], hooked: [], draws: 0};
  let canvas = null, ctx = null, t0 = 0, wasWhite = false;
  function draw() {  // at each tick the picture of this instant: white for WHITE ms of every PERIOD ms
    const now = performance.now();
    const white = (now - t0) % PERIOD < WHITE;
    ctx.fillStyle = white ? '#ffffff' : '#000000';
    ctx.fillRect(0, 0, W, H);
    if (white && !wasWhite) probe.flashes.push(performance.timeOrigin + now);
    wasWhite = white;
    probe.draws++;
  }
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    if (canvas === null) {
      canvas = document.createElement('canvas');
      canvas.width = W; canvas.height = H;
      ctx = canvas.getContext('2d');
      t0 = performance.now() + 1000;
      setInterval(draw, 1000 / FPS);
    }
    const tracks = [canvas.captureStream(FPS).getVideoTracks()[0]];
    if (c && c.audio) tracks.push(...(await gum({audio: true})).getAudioTracks());
    return new MediaStream(tracks);
  };
  let actx = null;
  function watch(node, what, ctx) {
    ctx = ctx || actx;
    const sp = ctx.createScriptProcessor(256, 1, 1);
    let on = false, lastLoud = 0;
    sp.onaudioprocess = (e) => {
      const x = e.inputBuffer.getChannelData(0);
      let s = 0;
      for (let i = 0; i < x.length; i++) s += x[i] * x[i];
      const now = performance.now();
      if (Math.sqrt(s / x.length) > 0.05) {
        if (!on) probe.beeps.push(performance.timeOrigin + now);
        on = true; lastLoud = now;
      } else if (on && now - lastLoud > 300) on = false;
    };
    node.connect(sp);
    sp.connect(ctx.destination);
    probe.hooked.push(what);
  }
  const pagePlayer = setInterval(() => {  // the Live tab's own player: its output node, once it exists
    const p = window.naturall2sLivePlayer;
    if (p && p.out) { clearInterval(pagePlayer); watch(p.out, 'page player', p.ctx); }
  }, 100);
  function context() { if (actx === null) actx = new AudioContext(); return actx; }
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    if (!this.__watched && !this.srcObject && this.tagName === 'AUDIO') {  // Gradio's streaming player
      this.__watched = true;
      watch(context().createMediaElementSource(this), 'media element');
    }
    return play.call(this);
  };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {  // fastrtc: the audio track that comes back
    const pc = new PC(...args);
    pc.addEventListener('track', (e) => {
      if (e.track.kind !== 'audio') return;
      const stream = new MediaStream([e.track]);
      const sink = new Audio(); sink.muted = true; sink.srcObject = stream; play.call(sink);  // Chromium needs a sink
      watch(context().createMediaStreamSource(stream), 'webrtc track');
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = PC.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, PC);
})();
