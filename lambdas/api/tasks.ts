import { BadRequest } from '../../core/errors';
import { cancelTask, groupTasks, ownTask, ownTasks, submitBatch, taskView, withinBudget } from '../../core/tasks';
import { encodeCursor } from '../../core/tables/cursor';
import { checkGroupCursor, legacySubmitOrder } from '../../core/tables/tasks';
import { apiHandler, pageOf, pathId, route } from '../http';
import { batchTasksBody, submitBody } from '../schemas';
import { waitForTasks } from './wait';

export const handler = apiHandler({
  // Lambda caps a request payload at 6 MB; large arguments go by POST /v1/payloads instead.
  'POST /v1/endpoints/{id}/submit': route({ auth: 'user', body: submitBody, maxBodyBytes: 5 * 1024 * 1024 }, async (req) => {
    const key = req.header('idempotency-key');
    if (key !== undefined && !/^[\x21-\x7e]{1,255}$/.test(key))
      throw new BadRequest('Idempotency-Key must be 1-255 printable ASCII characters');
    const out = await submitBatch({
      userId: req.caller.userId,
      endpointId: pathId(req, 'id', 'endpoint'),
      taskGroupId: req.body.task_group_id,
      tasks: req.body.tasks,
      idempotencyKey: key,
    });
    return { status: 202, body: out };
  }),

  'GET /v1/tasks/{id}': route({ auth: 'user' }, async (req) => {
    const t = await ownTask(pathId(req, 'id', 'task'), req.caller.userId);
    return { body: await taskView(t) };
  }),

  // Views in the order asked, as many as fit in one response (RESPONSE_BUDGET_BYTES); the ids of
  // the rest are named in `unread`, for the client to ask again (the SDKs do).
  'POST /v1/tasks/batch': route({ auth: 'user', body: batchTasksBody }, async ({ caller, body }) => {
    const { tasks, unknown } = await ownTasks(body.task_ids, caller.userId);
    const { fit, rest } = withinBudget(await Promise.all(tasks.map(taskView)));
    return { body: { tasks: fit, unknown, unread: tasks.slice(tasks.length - rest).map((t) => t.task_id) } };
  }),

  'GET /v1/task-groups/{id}': route({ auth: 'user' }, async (req) => {
    const groupId = pathId(req, 'id', 'task group');
    const { limit, cursor } = pageOf(req);
    await checkGroupCursor(groupId, req.caller.userId, cursor);
    const page = await groupTasks(groupId, req.caller.userId, limit, cursor);
    // A page ends early where the budget runs out; its cursor then continues after the last task shown.
    const { fit, rest } = withinBudget(await Promise.all(page.items.map(taskView)));
    const last = page.items[fit.length - 1];
    const next =
      rest && last
        ? encodeCursor({
            task_id: last.task_id,
            task_group_id: groupId,
            submit_order: last.submit_order ?? legacySubmitOrder(last.created_at, last.task_id),
          })
        : page.next;
    return { body: { task_group_id: groupId, tasks: fit, next_cursor: next } };
  }),

  'POST /v1/tasks/{id}/cancel': route({ auth: 'user' }, async (req) => {
    const t = await cancelTask(pathId(req, 'id', 'task'), req.caller.userId);
    return { body: await taskView(t) };
  }),

  // Long-poll for results (lambdas/api/wait.ts).
  'POST /v1/tasks/wait': waitForTasks,
});
