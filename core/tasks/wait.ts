import { performance } from 'node:perf_hooks';
import { isOwnTask, ownTasks } from '../access';
import { config } from '../config';
import { isFinal } from '../states';
import type { TaskRecord } from '../tables/task-records';
import { onAnyFinished, onFinished } from '../task-events';
import { viewsWithinBudget, type TaskView } from './views';

/**
 * POST /v1/tasks/wait (lambdas/api/wait.ts): the finished tasks among those asked, as soon as there is one. It answers
 * at once when any asked task is final or unknown; otherwise it waits for one to be announced
 * (core/task-events.ts: locally the results consumer runs in this process) and re-reads the open
 * ones after FERRY_WAIT_POLL_MS, then less often up to FERRY_WAIT_POLL_MAX_MS (in AWS nothing is
 * announced across Lambdas), until `wait_ms`. With many asked tasks still open, an answer that
 * announcements brought lingers FERRY_WAIT_LINGER_MS for more.
 * Same owner rules as POST /v1/tasks/batch: another user's ids are `unknown`. `pending` counts the
 * asked tasks still open; `unread` names finished ones that did not fit in the response.
 */
export async function waitForAnyFinished(
  ids: readonly string[],
  user: string,
  waitMs: number,
): Promise<{ tasks: TaskView[]; unknown: string[]; unread: string[]; pending: number }> {
  const deadline = Date.now() + waitMs;
  const heard = new Set<string>();
  // Final records that came with their announcement: they need no read.
  const told = new Map<string, TaskRecord>();
  let wake: (() => void) | undefined;
  // Subscribed before the first read: a task that finishes while it is under way is heard, not missed.
  const unsubscribe = onFinished(ids, (hits, records) => {
    for (const id of hits) heard.add(id);
    for (const r of records) if (isOwnTask(r, user) && isFinal(r.state)) told.set(r.task_id, r);
    wake?.();
  });
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      if (heard.size) return resolve();
      const done = () => {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      };
      // A wait holds nothing open by itself: a stack that closes (or a test that ends) need not outlast it.
      const timer = setTimeout(done, ms);
      timer.unref();
      wake = done;
    });
  try {
    const open = new Set<string>();
    const finals = new Map<string, TaskRecord>();
    const unknown = new Set<string>();
    const read = async (ask: readonly string[]) => {
      const out = await readOwn(ask, user);
      for (const t of out.tasks) {
        if (isFinal(t.state)) {
          open.delete(t.task_id);
          finals.set(t.task_id, t);
        } else open.add(t.task_id);
      }
      // A task gone meanwhile (its record expired) is unknown now.
      for (const id of out.unknown) {
        open.delete(id);
        unknown.add(id);
      }
    };
    // A wait that follows another (the SDKs ask again as soon as they are answered) reads only what it cannot trust.
    const trusted = recentlyOpen(ids, user);
    for (const id of trusted) open.add(id);
    const ask = trusted.size ? ids.filter((id) => !trusted.has(id)) : ids;
    if (ask.length) await read(ask);
    // Announced ids are read alone (unless their records came along); with none heard (AWS, or a
    // missed wake), every open task is read again.
    const catchUp = async () => {
      const again = heard.size ? [...heard] : [...open];
      heard.clear();
      const unread: string[] = [];
      for (const id of again) {
        const t = told.get(id);
        if (t && open.delete(id)) finals.set(id, t);
        else if (!t) unread.push(id);
      }
      if (unread.length) await read(unread);
    };
    // A task still open after a few re-reads probably runs long: it is read less often (AWS pays per read).
    let interval = config().waitPollMs;
    while (!finals.size && !unknown.size && open.size && Date.now() < deadline) {
      await pause(Math.min(interval, deadline - Date.now()));
      if (!heard.size) interval = Math.min(Math.max(config().waitPollMaxMs, config().waitPollMs), interval * 1.5);
      await catchUp();
    }
    // Finishes announced here come a few at a time, as each batch of reports is applied: with many
    // asked tasks still open, the answer waits a little for the next ones, so a busy client asks
    // (and is answered) less often. Never where nothing is announced (AWS: it would only wait).
    const lingerUntil = Math.min(deadline, Date.now() + config().waitLingerMs);
    while (told.size && open.size >= LINGER_MIN_OPEN && Date.now() < lingerUntil) {
      await pause(lingerUntil - Date.now());
      if (heard.size) await catchUp();
    }
    const done = ids.flatMap((id) => finals.get(id) ?? []);
    const views = await viewsWithinBudget(done);
    return { tasks: views.tasks, unknown: ids.filter((id) => unknown.has(id)), unread: views.unread, pending: open.size };
  } finally {
    unsubscribe();
  }
}

/** A wait on fewer open tasks than this (a lone task, a handful) answers without lingering. */
const LINGER_MIN_OPEN = 8;

/**
 * Tasks this process read as open lately, with their owner and when the read began. A wait trusts
 * an entry for FERRY_WAIT_POLL_MS, the staleness it accepts anyway where finishes are not announced
 * (AWS); an announcement drops the entry at once. Bounded: the oldest entries go first.
 */
const seenOpen = new Map<string, { owner: string; at: number }>();
/** When this process last heard each task announced, so a read that began before cannot mark it open again. */
const heardFinished = new Map<string, number>();
const SEEN_LIMIT = 100_000;

onAnyFinished((ids) => {
  const now = performance.now();
  for (const id of ids) {
    seenOpen.delete(id);
    heardFinished.delete(id);
    heardFinished.set(id, now);
  }
  trim(heardFinished);
});

function trim(map: Map<string, unknown>): void {
  for (const key of map.keys()) {
    if (map.size <= SEEN_LIMIT) break;
    map.delete(key);
  }
}

async function readOwn(ids: readonly string[], user: string): ReturnType<typeof ownTasks> {
  const began = performance.now();
  const out = await ownTasks(ids, user);
  for (const t of out.tasks) {
    seenOpen.delete(t.task_id);
    if (!isFinal(t.state) && !((heardFinished.get(t.task_id) ?? -1) >= began)) seenOpen.set(t.task_id, { owner: user, at: began });
  }
  for (const id of out.unknown) seenOpen.delete(id);
  trim(seenOpen);
  return out;
}

/**
 * Tasks this process has just written as waiting for their endpoint (a submit), as of `since`
 * (performance.now() before the write): a wait that follows trusts them as a read begun then,
 * so the usual first wait after a submit reads nothing.
 */
export function noteSubmitted(ids: readonly string[], owner: string, since: number): void {
  for (const id of ids) if (!((heardFinished.get(id) ?? -1) >= since)) seenOpen.set(id, { owner, at: since });
  trim(seenOpen);
}

function recentlyOpen(ids: readonly string[], user: string): Set<string> {
  const since = performance.now() - config().waitPollMs;
  return new Set(
    ids.filter((id) => {
      const seen = seenOpen.get(id);
      return seen !== undefined && seen.owner === user && seen.at > since;
    }),
  );
}
