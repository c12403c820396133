import type { TaskInMessage, TaskMessage } from '../../core/messages';
import type { RunOutcome } from '../runtime/pool';
import type { Bundle, QueuedTask } from './held-messages';
import type { ResultReporter } from './result-reporter';

/**
 * The agent's `count` task slots: each is a loop that takes the next task from the backlog, runs it
 * and hands its outcome to the reporter, then takes the next while that result travels.
 */
export class TaskSlots {
  /** Tasks received and not yet started, in order. */
  private backlog: QueuedTask[] = [];
  /** Slots waiting for the backlog to fill. */
  private readonly idleSlots: (() => void)[] = [];
  private readonly loops: Promise<void>[] = [];
  private active = 0;
  /** The receive loop, waiting for a slot to free. */
  private roomWaiter?: () => void;
  private stopping = false;

  constructor(
    private readonly count: number,
    private readonly run: (msg: TaskMessage, task: TaskInMessage) => Promise<RunOutcome>,
    private readonly reporter: ResultReporter,
  ) {}

  start(): void {
    for (let i = 0; i < this.count; i++) this.loops.push(this.slot());
  }

  /** Prefetch: room for up to one task per slot waiting, so a slot that frees finds work at once. */
  get room(): number {
    return 2 * this.count - this.active - this.backlog.length;
  }

  /** Resolves when a task ends (or stop is under way). */
  untilRoom(): Promise<void> {
    return new Promise<void>((r) => (this.roomWaiter = r));
  }

  /** Queue a bundle's tasks; `wakeIdle` then sets idle slots going. */
  add(bundle: Bundle): void {
    for (const task of bundle.msg.tasks) this.backlog.push({ bundle, task });
  }

  wakeIdle(): void {
    for (const w of this.idleSlots.splice(0)) w();
  }

  status() {
    return { workers: this.count, idle_workers: Math.max(0, this.count - this.active), running: this.active };
  }

  /** Slots stop once the backlog is empty; the receive loop stops waiting for room. */
  stopTaking(): void {
    this.stopping = true;
    this.roomWaiter?.();
  }

  /** Tasks none of whose bundle has started leave the backlog (their messages are handed back). */
  dropUnstarted(): void {
    this.backlog = this.backlog.filter((q) => q.bundle.started > 0);
  }

  /** True once every slot has run out of tasks within `graceMs`. */
  drained(graceMs: number): Promise<boolean> {
    this.wakeIdle();
    return Promise.race([
      Promise.allSettled(this.loops).then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), graceMs).unref()),
    ]);
  }

  private async slot(): Promise<void> {
    for (;;) {
      const next = this.backlog.shift();
      if (!next) {
        if (this.stopping) return;
        await new Promise<void>((r) => this.idleSlots.push(r));
        continue;
      }
      this.active++;
      try {
        await this.runTask(next);
      } finally {
        this.active--;
        this.roomWaiter?.();
      }
    }
  }

  /** Runs a task; resolves once it has run, its reports on their way (ResultReporter.settled). */
  private async runTask(q: QueuedTask): Promise<void> {
    q.bundle.started++;
    const startedAt = new Date().toISOString();
    // A task still running after the delay gets its own "started" report, sent while it runs (the
    // results handler orders the two); a quicker one folds its start into its result (started_at).
    let started: Promise<void> | undefined;
    const sendStarted = () => {
      started = this.reporter.sendStarted(q.task.task_id, startedAt);
    };
    const delay = this.reporter.startedReportDelayMs;
    let timer: NodeJS.Timeout | undefined;
    if (delay <= 0) sendStarted();
    else timer = setTimeout(sendStarted, delay).unref();
    let outcome: RunOutcome;
    try {
      outcome = await this.run(q.bundle.msg, q.task);
    } finally {
      // Cleared before any result is sent: a "started" never follows its task's result.
      clearTimeout(timer);
    }
    this.reporter.report(q, started, startedAt, outcome);
  }
}
