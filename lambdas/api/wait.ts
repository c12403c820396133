import { config } from '../../core/config';
import { isFinal } from '../../core/states';
import { onFinished } from '../../core/task-events';
import type { TaskRecord } from '../../core/tables/tasks';
import { ownTasks, taskView, withinBudget } from '../../core/tasks';
import { route } from '../http';
import { waitTasksBody } from '../schemas';

/**
 * POST /v1/tasks/wait: the finished tasks among those asked, as soon as there is one. It answers
 * at once when any asked task is final or unknown; otherwise it waits for one to be announced
 * (core/task-events.ts: locally the results consumer runs in this process) and re-reads the open
 * ones every FERRY_WAIT_POLL_MS (in AWS nothing is announced across Lambdas), until `wait_ms`.
 * Same owner rules as POST /v1/tasks/batch: another user's ids are `unknown`. `pending` counts the
 * asked tasks still open; `unread` names finished ones that did not fit in the response.
 */
export const waitForTasks = route({ auth: 'user', body: waitTasksBody }, async ({ caller, body }) => {
  const ids = body.task_ids;
  const deadline = Date.now() + body.wait_ms;
  const heard = new Set<string>();
  let wake: (() => void) | undefined;
  // Subscribed before the first read: a task that finishes while it is under way is heard, not missed.
  const unsubscribe = onFinished(ids, (hits) => {
    for (const id of hits) heard.add(id);
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
      const timer = setTimeout(done, ms);
      wake = done;
    });
  try {
    const first = await ownTasks(ids, caller.userId);
    const known = new Map<string, TaskRecord>(first.tasks.map((t) => [t.task_id, t]));
    const unknown = new Set(first.unknown);
    const open = () => [...known.values()].filter((t) => !isFinal(t.state)).map((t) => t.task_id);
    let anyFinal = first.tasks.some((t) => isFinal(t.state));
    while (!anyFinal && !unknown.size && open().length && Date.now() < deadline) {
      await pause(Math.min(config().waitPollMs, deadline - Date.now()));
      // Announced ids are read alone; with none heard (AWS, or a missed wake), every open task is read again.
      const ask = heard.size ? [...heard] : open();
      heard.clear();
      const again = await ownTasks(ask, caller.userId);
      for (const t of again.tasks) known.set(t.task_id, t);
      // A task gone meanwhile (its record expired) is unknown now.
      for (const id of again.unknown) {
        known.delete(id);
        unknown.add(id);
      }
      anyFinal = again.tasks.some((t) => isFinal(t.state));
    }
    const finals = ids.flatMap((id) => {
      const t = known.get(id);
      return t && isFinal(t.state) ? [t] : [];
    });
    const { fit, rest } = withinBudget(await Promise.all(finals.map(taskView)));
    return {
      body: {
        tasks: fit,
        unknown: ids.filter((id) => unknown.has(id)),
        unread: finals.slice(finals.length - rest).map((t) => t.task_id),
        pending: open().length,
      },
    };
  } finally {
    unsubscribe();
  }
});
