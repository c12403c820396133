/**
 * The pool <-> runner wire format, shared by node_runner.js and python_runner.py (each has its
 * own ten-line copy): a frame is a u32be length of what follows, a u32be length of a JSON
 * header, the header, then raw body bytes (arguments, a result or a pickled exception).
 * The pool writes requests on the child's fd 3 and reads replies on its fd 4, so nothing the
 * user's code prints on stdout or stderr can corrupt the channel.
 */
export interface Frame<H = Record<string, unknown>> {
  header: H;
  body: Buffer;
}

// u32 lengths: a frame carries at most 4 GiB - 1 bytes, far above what a task keeps in memory.
const MAX_FRAME = 0xffffffff;

export function encodeFrame(header: object, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.from(JSON.stringify(header));
  const length = 4 + head.length + body.length;
  if (length > MAX_FRAME) throw new RangeError(`frame of ${length} bytes exceeds the 4 GiB protocol limit`);
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(length, 0);
  prefix.writeUInt32BE(head.length, 4);
  return Buffer.concat([prefix, head, body]);
}

/** Reassembles frames from a byte stream that may split or merge them arbitrarily. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const length = this.peekLength();
      if (this.buffered < 4 + length) break;
      const bytes = this.take(4 + length);
      const headLength = bytes.readUInt32BE(4);
      const header = JSON.parse(bytes.subarray(8, 8 + headLength).toString('utf8'));
      frames.push({ header, body: bytes.subarray(8 + headLength) });
    }
    return frames;
  }

  private peekLength(): number {
    if (this.chunks[0].length < 4) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].readUInt32BE(0);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return all.subarray(0, n);
  }
}
