import type { TaskOutput } from '../../core/tables/task-records';
/**
 * A task's stdout or stderr, kept within a cap: the first half and the last half of the cap, and
 * how many bytes fell between them. Memory stays bounded however much a task prints.
 */
export class CappedStream {
  private head: Buffer[] = [];
  private headBytes = 0;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** Everything written, kept or not. */
  total = 0;

  constructor(private readonly cap: number) {}

  write(chunk: Buffer): void {
    this.total += chunk.length;
    const headRoom = Math.ceil(this.cap / 2) - this.headBytes;
    if (headRoom > 0) {
      const part = chunk.subarray(0, headRoom);
      this.head.push(part);
      this.headBytes += part.length;
      chunk = chunk.subarray(part.length);
      if (!chunk.length) return;
    }
    const tailCap = Math.floor(this.cap / 2);
    if (tailCap <= 0) return;
    if (chunk.length >= tailCap) {
      this.tail = [chunk.subarray(chunk.length - tailCap)];
      this.tailBytes = tailCap;
      return;
    }
    this.tail.push(chunk);
    this.tailBytes += chunk.length;
    while (this.tailBytes - this.tail[0]!.length >= tailCap) this.tailBytes -= this.tail.shift()!.length;
  }

  /** The kept text, with a marker where bytes were cut. */
  text(): string {
    const head = Buffer.concat(this.head);
    let tail = Buffer.concat(this.tail);
    const kept = head.length + tail.length;
    if (kept >= this.total) return Buffer.concat([head, tail]).toString('utf8');
    tail = tail.subarray(tail.length - Math.min(tail.length, Math.floor(this.cap / 2)));
    return joinCut(head.toString('utf8'), this.total - head.length - tail.length, tail.toString('utf8'));
  }
}

const MARKER = /\n\[ferry: (\d+) bytes of output cut\]\n/;
const joinCut = (head: string, cut: number, tail: string) => `${head}\n[ferry: ${cut} bytes of output cut]\n${tail}`;

/** What a task printed, as the result message and the task record carry it: `truncated` when a marker is in a stream. */
export type { TaskOutput };

export function taskOutput(stdout: CappedStream, stderr: CappedStream): TaskOutput | undefined {
  if (!stdout.total && !stderr.total) return undefined;
  const out: TaskOutput = { stdout: stdout.text(), stderr: stderr.text(), stdout_bytes: stdout.total, stderr_bytes: stderr.total };
  if (MARKER.test(out.stdout) || MARKER.test(out.stderr)) out.truncated = true;
  return out;
}

/** Cuts one stream's text to at most `max` characters, head and tail, adding to any earlier cut. */
export function shrinkText(text: string, max: number): string {
  if (text.length <= max) return text;
  let earlier = 0;
  const m = MARKER.exec(text);
  let head: string;
  let tail: string;
  if (m) {
    earlier = Number(m[1]);
    head = text.slice(0, m.index);
    tail = text.slice(m.index + m[0].length);
  } else {
    head = text.slice(0, Math.ceil(text.length / 2));
    tail = text.slice(head.length);
  }
  const keepHead = Math.ceil(max / 2);
  const keepTail = Math.floor(max / 2);
  const newHead = head.slice(0, keepHead);
  const newTail = keepTail > 0 ? tail.slice(-keepTail) : '';
  const cut = earlier + Buffer.byteLength(head.slice(newHead.length)) + Buffer.byteLength(tail.slice(0, tail.length - newTail.length));
  return joinCut(newHead, cut, newTail);
}

/** The output cut further so the whole report fits `budget` bytes of JSON (SQS: 256 KiB per message). */
export function fitOutput<T extends { output?: TaskOutput }>(report: T, budget: number, size: (r: T) => number): T {
  let r = report;
  while (r.output && size(r) > budget) {
    const o = r.output;
    const longest = Math.max(o.stdout.length, o.stderr.length);
    if (longest <= 64) {
      const { output: _dropped, ...rest } = r;
      return rest as T;
    }
    const max = Math.floor(longest / 2);
    const stdout = shrinkText(o.stdout, max);
    const stderr = shrinkText(o.stderr, max);
    r = { ...r, output: { ...o, stdout, stderr, truncated: o.truncated || stdout !== o.stdout || stderr !== o.stderr || undefined } };
  }
  return r;
}
