/**
 * The aws-chunked body the AWS SDK v3 streams an upload of unknown digest in
 * (`x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER`), its checksum in a trailer:
 *
 *   <hex-size>\r\n<bytes>\r\n ... 0\r\n<trailer>:<value>\r\n\r\n
 *
 * Signed chunks (`;chunk-signature=`), which the SDK v3 never sends, are refused before a body
 * gets here (see body.ts).
 */
import { incompleteBody, invalidRequest } from './errors';

// A chunk-size line or a trailer is a few dozen bytes; more is no aws-chunked body.
const MAX_LINE = 8192;

export class AwsChunkedDecoder {
  /** Trailer values by lower-case name, once the body has ended. */
  readonly trailers: Record<string, string> = {};
  private state: 'size' | 'data' | 'dataEnd' | 'trailer' | 'done' = 'size';
  private line = '';
  private remaining = 0;

  /** The payload bytes within `chunk`, as views into it. */
  feed(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, chunk.length - i);
        out.push(chunk.subarray(i, i + n));
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = 'dataEnd';
      } else if (this.state === 'done') {
        throw malformed('data after the final chunk');
      } else {
        const newline = chunk.indexOf(0x0a, i);
        const end = newline === -1 ? chunk.length : newline;
        this.line += chunk.toString('latin1', i, end);
        if (this.line.length > MAX_LINE) throw malformed('a chunk header or trailer is too long');
        if (newline === -1) break;
        i = newline + 1;
        const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line;
        this.line = '';
        this.onLine(line);
      }
    }
    return out;
  }

  /** Call at the end of the body. */
  finish(): void {
    // A body may end right after its trailers, without the closing empty line.
    const endedInTrailer = this.state === 'trailer' && this.line === '';
    if (this.state !== 'done' && !endedInTrailer) throw incompleteBody('The request body ended before the final aws-chunked chunk.');
  }

  private onLine(line: string): void {
    if (this.state === 'dataEnd') {
      if (line !== '') throw malformed('a chunk is longer than its declared size');
      this.state = 'size';
    } else if (this.state === 'size') {
      if (!/^[0-9a-fA-F]{1,12}$/.test(line)) throw malformed(`bad chunk size "${line.slice(0, 20)}"`);
      const size = parseInt(line, 16);
      if (size === 0) this.state = 'trailer';
      else {
        this.remaining = size;
        this.state = 'data';
      }
    } else if (line === '') {
      this.state = 'done';
    } else {
      const colon = line.indexOf(':');
      if (colon <= 0) throw malformed('a trailer has no name');
      this.trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
}

const malformed = (why: string) => invalidRequest(`Malformed aws-chunked body: ${why}.`);
