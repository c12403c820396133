import type { ResultMessage, TaskInMessage } from '../../core/messages';
import type { Envelope } from '../../core/payload';
import { fitOutput } from '../runtime/output';
import type { RunOutcome } from '../runtime/pool';
import type { AgentLog, HeldMessages, QueuedTask } from './held-messages';
import type { TaskSource } from './task-source';

// SQS: a result message is at most 256 KiB; tracebacks beyond this are cut.
const MAX_TRACEBACK = 64 * 1024;
const MAX_MESSAGE = 16 * 1024;
// SQS: 256 KiB per message; a report's task output is cut until the whole report fits in this.
const REPORT_BUDGET = 250 * 1024;

/** A result message less what the agent adds to every one. */
type ReportBody = ResultMessage extends infer M
  ? M extends ResultMessage
    ? Omit<M, 'v' | 'endpoint_id' | 'worker_id' | 'at'>
    : never
  : never;

/**
 * Sends a task's reports to the results queue: a "started" for a task that runs long, then its
 * result or exception (payloads stored first when large, output cut to fit SQS). After a bundle's
 * last report its message is deleted (HeldMessages.taskReported).
 */
export class ResultReporter {
  /** Tasks whose result was sent. */
  completed = 0;
  /** Reports still being sent: stop() waits for them. */
  private readonly sending = new Set<Promise<void>>();

  constructor(
    private readonly source: TaskSource,
    private readonly held: HeldMessages,
    private readonly ids: { endpointId: string; workerId: string },
    /** A task still running this long after it started gets a separate "started" report (AgentOptions.startedReportDelayMs). */
    readonly startedReportDelayMs: number,
    private readonly log: AgentLog,
  ) {}

  /** Send a task's "started" report; a failure shows when its result waits for it. */
  sendStarted(taskId: string, startedAt: string): Promise<void> {
    const sent = this.source.send(this.format({ kind: 'started', task_id: taskId }, startedAt));
    sent.catch(() => undefined);
    return sent;
  }

  /** Send a task's result, after its "started" if one was sent; the bundle's last report lets its message go. */
  report(q: QueuedTask, started: Promise<void> | undefined, startedAt: string, outcome: RunOutcome): void {
    const reported = this.sendResult(q, started, startedAt, outcome);
    this.sending.add(reported);
    void reported.finally(() => this.sending.delete(reported));
  }

  /** Resolves once every report under way has been sent or has failed. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.sending]);
  }

  private async sendResult(
    { bundle, task }: QueuedTask,
    started: Promise<void> | undefined,
    startedAt: string,
    outcome: RunOutcome,
  ): Promise<void> {
    try {
      // A result goes only after its task's "started" is on the queue, if one was sent.
      if (started) await started;
      const body = await this.resultOf(task, outcome, started ? undefined : startedAt);
      await this.source.send(this.format(body));
      this.completed++;
    } catch (err) {
      bundle.broken = true;
      this.log('task not reported; it will be delivered again', { task: task.task_id, error: String(err) });
    }
    this.held.taskReported(bundle);
  }

  /** The report with the task's output, cut further if need be so the message fits SQS. */
  private async resultOf(msg: TaskInMessage, outcome: RunOutcome, startedAt?: string): Promise<ReportBody> {
    const body = await this.outcomeReport(msg, outcome);
    if (startedAt && body.kind !== 'started') body.started_at = startedAt;
    if (!outcome.output) return body;
    type WithOutput = ReportBody & { output?: RunOutcome['output'] };
    return fitOutput<WithOutput>({ ...body, output: outcome.output }, REPORT_BUDGET, (r) => Buffer.byteLength(this.format(r)));
  }

  private async outcomeReport(msg: TaskInMessage, outcome: RunOutcome): Promise<ReportBody> {
    if (outcome.ok) {
      const result = await this.source.storePayload(outcome.result, outcome.codec, 'result', msg.task_id);
      return { kind: 'success', task_id: msg.task_id, result };
    }
    let payload: Envelope | undefined;
    if (outcome.payload) payload = await this.source.storePayload(outcome.payload.data, outcome.payload.codec, 'exception', msg.task_id);
    const e = outcome.error;
    return {
      kind: 'failed',
      task_id: msg.task_id,
      exception: {
        type: e.type.slice(0, 1024),
        message: clip(e.message, MAX_MESSAGE),
        traceback: clip(e.traceback, MAX_TRACEBACK),
        payload,
      },
    };
  }

  /** `at`: when it happened; a delayed "started" report carries the task's real start. */
  private format(body: ReportBody, at = new Date().toISOString()): string {
    return JSON.stringify({ v: 1, endpoint_id: this.ids.endpointId, worker_id: this.ids.workerId, at, ...body });
  }
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}\n… (${s.length - n} more characters cut)` : s);
