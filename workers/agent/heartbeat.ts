import type { TaskSource } from './task-source';

/** The agent's heartbeats to the API: one at start, one every `everyMs`, and a last one saying it stopped. */
export class Heartbeat {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private beating: Promise<void> = Promise.resolve();

  constructor(
    private readonly source: TaskSource,
    readonly everyMs: number,
    /** What a beat says: the agent's id, counts, runtimes and version. */
    private readonly body: () => Record<string, unknown>,
    /** The API refused the endpoint secret. */
    private readonly onRevoked: () => void,
  ) {}

  async start(): Promise<void> {
    await this.beat();
    // A stop while the first beat was in flight: no periodic beat may follow its goodbye.
    if (!this.stopped) this.timer = setInterval(() => void this.beat(), this.everyMs);
  }

  /** No more periodic beats; `goodbye`: a last one says the agent stopped. */
  async stop(goodbye: boolean): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (goodbye) await this.beat(true);
  }

  /** One heartbeat at a time: a periodic one still in flight must not land after the last one and bring the agent back. */
  private beat(stopped = false): Promise<void> {
    this.beating = this.beating.then(() => this.send(stopped));
    return this.beating;
  }

  private async send(stopped: boolean): Promise<void> {
    // heartbeat_ms: the API reads this agent as gone once two beats are missed.
    const body = { ...this.body(), heartbeat_ms: this.everyMs, stopped };
    if ((await this.source.heartbeat(body)) === 'revoked') this.onRevoked();
  }
}
