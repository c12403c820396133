import type { AgentProcess } from './agent-process';

/** What an agent exits with when its endpoint secret is refused or its configuration cannot work (workers/main.ts). */
export const AGENT_CONFIG_EXIT = 2;

export interface AgentSupervisorOptions {
  /** Starts one agent process; called again for each restart, so it may read its configuration afresh. */
  spawn: () => AgentProcess;
  /** What the console lines call the agent; default "worker agent". */
  name?: string;
  /** Restart an agent that died; default true. */
  restart?: boolean;
  /** The first restart waits this long, each quick death after it twice as long, up to maxDelayMs; defaults 1 s and 30 s. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** An agent that ran this long before it died was healthy: its restart waits initialDelayMs again. Default 60 s. */
  healthyAfterMs?: number;
  /**
   * How long a draining agent may take before it is killed: its grace period for running tasks
   * plus a margin for handing messages back, its last heartbeat and stopping its runtimes.
   */
  stopTimeoutMs: number;
  log?: (line: string) => void;
}

export type SupervisorState = 'running' | 'restart-pending' | 'given-up' | 'stopping' | 'stopped';

const seconds = (ms: number) => (ms < 10_000 ? `${Math.round(ms / 100) / 10} s` : `${Math.round(ms / 1000)} s`);

/**
 * Keeps one agent process alive: restarts it when it dies, with a delay that doubles while it
 * keeps dying quickly; drains it on stop() with exactly one SIGTERM, and kills it if it outlives
 * its grace period. The agent should run in its own process group (spawnAgentProcess's
 * `detached`), so a Ctrl-C at the terminal reaches only the process that supervises it.
 * An agent that exits 2 is not restarted: its secret was refused or its configuration cannot
 * work here, and starting it again with the same configuration would only fail the same way.
 */
export class AgentSupervisor {
  private agent?: AgentProcess;
  private startedAt = 0;
  private nextDelayMs: number;
  private restartTimer?: NodeJS.Timeout;
  private stopping?: Promise<void>;
  private _state: SupervisorState = 'stopped';
  /** How many times the agent was started again after dying. */
  restarts = 0;
  private readonly name: string;
  private readonly log: (line: string) => void;
  private readonly listeners: ((agent: AgentProcess) => void)[] = [];

  constructor(private readonly opts: AgentSupervisorOptions) {
    this.name = opts.name ?? 'worker agent';
    this.log = opts.log ?? ((line) => console.error(line));
    this.nextDelayMs = opts.initialDelayMs ?? 1000;
  }

  get state(): SupervisorState {
    return this._state;
  }

  /** The agent process of the moment, if one is alive. */
  get current(): AgentProcess | undefined {
    return this.agent && alive(this.agent) ? this.agent : undefined;
  }

  /** Called with each agent process started (the first and every restart). */
  onSpawn(fn: (agent: AgentProcess) => void): void {
    this.listeners.push(fn);
  }

  start(): void {
    if (this._state !== 'stopped' || this.stopping) throw new Error('the supervisor has already started');
    this.launch();
  }

  private launch(): void {
    this.restartTimer = undefined;
    const agent = this.opts.spawn();
    this.agent = agent;
    this.startedAt = Date.now();
    this._state = 'running';
    this.log(`${this.name} started (pid ${agent.child.pid})`);
    for (const fn of this.listeners) fn(agent);
    void agent.exited.then(({ code, signal }) => this.exited(agent, code, signal));
  }

  private exited(agent: AgentProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (agent !== this.agent || this.stopping) return;
    const ranMs = Date.now() - this.startedAt;
    const how = `${this.name} (pid ${agent.child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`} after ${seconds(ranMs)}`;
    if (code === AGENT_CONFIG_EXIT) {
      this._state = 'given-up';
      this.log(
        `${how}: its endpoint secret was refused or its configuration cannot work here (see its lines above); not restarting it until that is fixed and this process is started again`,
      );
      return;
    }
    if (this.opts.restart === false) {
      this._state = 'given-up';
      this.log(`${how}; restarts are off, so it stays down`);
      return;
    }
    const initial = this.opts.initialDelayMs ?? 1000;
    // A long healthy run means this death is news, not the latest of a crash loop.
    if (ranMs >= (this.opts.healthyAfterMs ?? 60_000)) this.nextDelayMs = initial;
    const delay = this.nextDelayMs;
    this.nextDelayMs = Math.min(delay * 2, this.opts.maxDelayMs ?? 30_000);
    this.restarts++;
    this._state = 'restart-pending';
    this.log(`${how}; restarting it in ${seconds(delay)} (restart ${this.restarts})`);
    this.restartTimer = setTimeout(() => this.launch(), delay);
  }

  /**
   * Drain: no more restarts; the agent gets one SIGTERM, finishes its running tasks and hands
   * back the rest; if it is still alive after stopTimeoutMs it is killed. Resolves once no agent
   * runs; at once if none does. Calling it again returns the same drain.
   */
  stop(): Promise<void> {
    this.stopping ??= this.drain();
    return this.stopping;
  }

  private async drain(): Promise<void> {
    clearTimeout(this.restartTimer);
    const agent = this.current;
    if (!agent) {
      this._state = 'stopped';
      return;
    }
    this._state = 'stopping';
    agent.child.kill('SIGTERM');
    const overdue = setTimeout(() => {
      this.log(`${this.name} (pid ${agent.child.pid}) is still running ${seconds(this.opts.stopTimeoutMs)} after SIGTERM; killing it`);
      killHard(agent);
    }, this.opts.stopTimeoutMs);
    await agent.exited;
    clearTimeout(overdue);
    this._state = 'stopped';
  }

  /** Stop at once: no more restarts, SIGKILL to the agent (and its process group). */
  async kill(): Promise<void> {
    this.stopping ??= Promise.resolve();
    clearTimeout(this.restartTimer);
    const agent = this.current;
    if (agent) {
      killHard(agent);
      await agent.exited;
    }
    this._state = 'stopped';
  }
}

const alive = (a: AgentProcess) => a.child.exitCode === null && a.child.signalCode === null;

function killHard(agent: AgentProcess): void {
  const pid = agent.child.pid;
  if (pid === undefined || !alive(agent)) return;
  try {
    // A detached agent leads its own process group: take whatever it started along with it.
    process.kill(-pid, 'SIGKILL');
  } catch {
    agent.child.kill('SIGKILL');
  }
}
