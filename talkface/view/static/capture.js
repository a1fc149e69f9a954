// AudioWorklet: hands the microphone's mono samples to the page in blocks of `block` samples.
class TalkfaceCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.block = (options.processorOptions && options.processorOptions.block) || 640;
    this.buffer = new Float32Array(this.block);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const channel = input[0];
      for (let i = 0; i < channel.length; i++) {
        this.buffer[this.fill++] = channel[i];
        if (this.fill === this.block) {
          this.port.postMessage(this.buffer);
          this.buffer = new Float32Array(this.block);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor('talkface-capture', TalkfaceCapture);
