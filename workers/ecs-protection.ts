/**
 * ECS task scale-in protection for an agent running as an ECS task (Fargate endpoints).
 *
 * While the agent holds task messages its ECS task is protected, so neither a scale-in by
 * Application Auto Scaling nor a deployment picks it; once it holds nothing the protection is
 * turned off and the task may go. The ECS container agent offers this at
 * `$ECS_AGENT_URI/task-protection/v1/state` (it injects ECS_AGENT_URI into every container):
 * PUT {"ProtectionEnabled": bool, "ExpiresInMinutes": n} answers 200 with {"protection": {...}},
 * or 200 with {"failure": {"Arn", "Reason", "Detail"}} when ECS refused, or 4xx/5xx with
 * {"error": {"Arn", "Code", "Message"}}. It calls ecs:UpdateTaskProtection with the task role.
 *
 * Protection lapses by itself after ExpiresInMinutes (so a hung agent cannot pin a task for
 * ever); while the agent stays busy it renews well before that. Every failure is logged and
 * retried at the next change or renewal, never fatal: an unprotected task still drains its
 * running tasks on SIGTERM, and anything it cannot finish is delivered again.
 */
export interface TaskProtectionOptions {
  /** ECS_AGENT_URI. */
  agentUri: string;
  /** How long one PUT protects the task (ECS: 1 to 2,880 minutes); default 15. */
  expiresInMinutes?: number;
  /** How often a busy agent renews; default a third of the expiry. */
  renewEveryMs?: number;
  log: (msg: string, extra?: Record<string, unknown>) => void;
}

export const DEFAULT_PROTECTION_MINUTES = 15;
const REQUEST_TIMEOUT_MS = 10_000;

export class TaskProtection {
  /** What the agent wants: protected while it holds anything. */
  private wanted = false;
  /** What ECS last confirmed. */
  private protectedNow = false;
  private lastConfirmed = 0;
  private working: Promise<void> = Promise.resolve();
  private pending = false;
  private renewTimer?: NodeJS.Timeout;
  private closed = false;
  private readonly url: string;
  private readonly minutes: number;
  private readonly renewMs: number;

  constructor(private readonly opts: TaskProtectionOptions) {
    this.url = `${opts.agentUri.replace(/\/+$/, '')}/task-protection/v1/state`;
    this.minutes = Math.min(2880, Math.max(1, Math.round(opts.expiresInMinutes ?? DEFAULT_PROTECTION_MINUTES)));
    this.renewMs = opts.renewEveryMs ?? (this.minutes * 60_000) / 3;
  }

  /** The agent now holds `count` task messages (received, running or being reported). */
  held(count: number): void {
    if (this.closed) return;
    const wanted = count > 0;
    if (wanted === this.wanted) return;
    this.wanted = wanted;
    if (wanted) {
      this.renewTimer = setInterval(() => this.sync(true), this.renewMs);
      this.renewTimer.unref();
    } else {
      clearInterval(this.renewTimer);
    }
    this.sync(false);
  }

  /** Waits for requests in flight; with `release` turns protection off first (the agent is stopping). */
  async close(release = true): Promise<void> {
    if (release) this.held(0);
    this.closed = true;
    clearInterval(this.renewTimer);
    await this.working;
  }

  /** Brings ECS in line with `wanted`, one request at a time; the latest wish wins. */
  private sync(renew: boolean): void {
    if (renew && this.wanted) this.lastConfirmed = 0;
    if (this.pending) return;
    this.pending = true;
    this.working = this.working.then(async () => {
      this.pending = false;
      const want = this.wanted;
      const fresh = Date.now() - this.lastConfirmed < this.renewMs;
      if (want === this.protectedNow && (!want || fresh)) return;
      if (await this.put(want)) {
        this.protectedNow = want;
        this.lastConfirmed = want ? Date.now() : 0;
      }
    });
  }

  private async put(enabled: boolean): Promise<boolean> {
    const body = enabled ? { ProtectionEnabled: true, ExpiresInMinutes: this.minutes } : { ProtectionEnabled: false };
    try {
      const res = await fetch(this.url, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const text = await res.text();
      let answer: { protection?: unknown; failure?: { Reason?: string; Detail?: string }; error?: { Code?: string; Message?: string } } =
        {};
      try {
        answer = JSON.parse(text);
      } catch {
        // Not JSON: reported below with the status.
      }
      if (res.ok && answer.protection && !answer.failure && !answer.error) return true;
      const why = answer.failure
        ? `${answer.failure.Reason ?? 'failure'}${answer.failure.Detail ? `: ${answer.failure.Detail}` : ''}`
        : answer.error
          ? `${answer.error.Code ?? 'error'}: ${answer.error.Message ?? ''}`
          : `HTTP ${res.status} ${text.slice(0, 200)}`;
      this.opts.log(`could not turn task scale-in protection ${enabled ? 'on' : 'off'}`, { reason: why });
    } catch (err) {
      this.opts.log(`could not turn task scale-in protection ${enabled ? 'on' : 'off'}`, { reason: String(err) });
    }
    return false;
  }
}

/** Protection for this process's ECS task, or undefined outside ECS (no ECS_AGENT_URI). */
export function taskProtectionFromEnv(log: TaskProtectionOptions['log'], env: NodeJS.ProcessEnv = process.env): TaskProtection | undefined {
  const uri = env.ECS_AGENT_URI;
  if (!uri) return undefined;
  const minutes = env.FERRY_PROTECTION_MINUTES ? Number(env.FERRY_PROTECTION_MINUTES) : undefined;
  const renew = env.FERRY_PROTECTION_RENEW_MS ? Number(env.FERRY_PROTECTION_RENEW_MS) : undefined;
  return new TaskProtection({
    agentUri: uri,
    expiresInMinutes: minutes !== undefined && Number.isFinite(minutes) ? minutes : undefined,
    renewEveryMs: renew !== undefined && Number.isFinite(renew) && renew > 0 ? renew : undefined,
    log,
  });
}
