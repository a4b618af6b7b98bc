// The browser viewer: joins the room with livekit-client, reads the avatar's mouth opening from every rendered frame
// (requestVideoFrameCallback + canvas) and the loudness of its voice from WebAudio, both on the page's clock
// (performance.timeOrigin + performance.now(), milliseconds since the epoch), and posts them to the page's server.
(async () => {
  const params = new URLSearchParams(location.search);
  const url = params.get("url"), token = params.get("token"), avatar = params.get("avatar");
  const ref = JSON.parse(params.get("mouth"));  // the mock's mouth box at the published size (providers.mock.face)
  const status = document.getElementById("status");
  const video = document.getElementById("video");
  const epoch = (perf) => performance.timeOrigin + perf;
  const pending = { video: [], audio: [], playout: [], events: [] };
  const note = (what) => { pending.events.push([epoch(performance.now()), what]); status.textContent = what; };

  const canvas = document.createElement("canvas");
  const draw = canvas.getContext("2d", { willReadFrequently: true });
  const FLOOR_DBFS = -50, CEIL_DBFS = -10;  // viewer.sync.envelope_level's scale

  canvas.width = ref.width;
  canvas.height = ref.height;

  function opening() {
    // a frame of another size (a simulcast layer: the SFU forwards the one the page subscribed to) is scaled to
    // the size the mouth box is given for
    draw.drawImage(video, 0, 0, ref.width, ref.height);
    const box = draw.getImageData(ref.x0, ref.y0, ref.x1 - ref.x0, ref.y1 - ref.y0).data;
    let dark = 0;
    for (let i = 0; i < box.length; i += 4) {
      const luma = 16 + box[i] * ref.ky_r + box[i + 1] * ref.ky_g + box[i + 2] * ref.ky_b;
      if (luma < ref.threshold) dark += 1;
    }
    return Math.min(1, Math.max(0, (dark - ref.closed) / (ref.full - ref.closed)));
  }

  function onFrame(now, meta) {
    // shown at expectedDisplayTime; presentedFrames counts every frame the compositor presented (gaps = dropped)
    pending.video.push([epoch(meta.expectedDisplayTime), opening(), meta.presentedFrames, meta.width, meta.height]);
    video.requestVideoFrameCallback(onFrame);
  }

  const audioCtx = new AudioContext({ latencyHint: "interactive" });
  await audioCtx.audioWorklet.addModule("/level-worklet.js");
  let audioElement = null;

  async function listen(track) {
    // Chromium decodes a remote WebRTC audio track only while a media element plays it
    audioElement = track.attach();
    audioElement.muted = true;
    document.body.appendChild(audioElement);
    const source = audioCtx.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
    const level = new AudioWorkletNode(audioCtx, "level-processor");
    const silent = audioCtx.createGain();
    silent.gain.value = 0;
    source.connect(level).connect(silent).connect(audioCtx.destination);
    level.port.onmessage = (ev) => {
      const [endCtx, meanSq] = ev.data;
      // the AudioContext time at which the chunk ends, mapped to when it reaches the output
      const stamp = audioCtx.getOutputTimestamp();
      const heard = stamp.performanceTime + (endCtx - stamp.contextTime) * 1000;
      const dbfs = meanSq > 0 ? 10 * Math.log10(meanSq) : -200;  // 0 dBFS = a full-scale square wave
      const lv = Math.min(1, Math.max(0, (dbfs - FLOOR_DBFS) / (CEIL_DBFS - FLOOR_DBFS)));
      pending.audio.push([epoch(heard), lv]);
    };
    await audioCtx.resume();
  }

  // What the page's audio element plays: the receiver reports, per RTP packet, when it began to play it out
  // (getSynchronizationSources().timestamp: delivered to the track, after the jitter buffer) with the sender's
  // audio level of that packet (RFC 6464, linear 0..1 of full scale).
  function pollSources(receiver) {
    let last = 0;
    setInterval(() => {
      for (const src of receiver.getSynchronizationSources()) {
        if (src.timestamp !== last && src.audioLevel !== undefined) {
          last = src.timestamp;
          const dbfs = src.audioLevel > 0 ? 20 * Math.log10(src.audioLevel) : -127;
          pending.playout.push([src.timestamp, Math.min(1, Math.max(0, (dbfs - FLOOR_DBFS) / (CEIL_DBFS - FLOOR_DBFS)))]);
        }
      }
    }, 2);
  }

  const room = new LivekitClient.Room({ adaptiveStream: false, dynacast: false });
  room.on(LivekitClient.RoomEvent.TrackSubscribed, async (track, pub, participant) => {
    if (participant.identity !== avatar) return;
    if (track.kind === "video") {
      track.attach(video);
      note("subscribed video");
      video.requestVideoFrameCallback(onFrame);
    } else if (track.kind === "audio") {
      note("subscribed audio");
      await listen(track);
      pollSources(track.receiver);
    }
  });
  room.on(LivekitClient.RoomEvent.ParticipantDisconnected, (p) => { if (p.identity === avatar) note("avatar left"); });
  try {
    await room.connect(url, token, { autoSubscribe: true });
    note("joined");
  } catch (err) {
    note("join failed: " + err);
  }
  setInterval(async () => {
    if (!pending.video.length && !pending.audio.length && !pending.playout.length && !pending.events.length) return;
    const batch = { video: pending.video.splice(0), audio: pending.audio.splice(0),
                    playout: pending.playout.splice(0), events: pending.events.splice(0) };
    try {
      await fetch("/samples", { method: "POST", body: JSON.stringify(batch) });
    } catch (err) {
      status.textContent = "post failed: " + err;
    }
  }, 200);
})();
