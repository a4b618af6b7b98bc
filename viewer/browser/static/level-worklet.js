// Loudness of what is played, per 10 ms of audio, with the AudioContext time at which the chunk ends.
class LevelProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunk = Math.round(sampleRate / 100);
    this.sum = 0;
    this.n = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (input.length === 0) return true;
    const samples = input[0];
    for (let i = 0; i < samples.length; i++) {
      this.sum += samples[i] * samples[i];
      this.n += 1;
      if (this.n === this.chunk) {
        const end = currentTime + (i + 1) / sampleRate;
        this.port.postMessage([end, this.sum / this.n]);
        this.sum = 0;
        this.n = 0;
      }
    }
    return true;
  }
}
registerProcessor("level-processor", LevelProcessor);
