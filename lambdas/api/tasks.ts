import { ownTask, ownTasks } from '../../core/access';
import { cancelTask, groupPage } from '../../core/tasks/reads';
import { submitBatch } from '../../core/tasks/submit';
import { taskView, viewsWithinBudget } from '../../core/tasks/views';
import { apiHandler, headerOf, pageOf, pathId, route } from '../http';
import { batchTasksBody, idempotencyKeyHeader, submitBody } from '../schemas';
import { waitForTasks } from './wait';

export const handler = apiHandler({
  // Lambda caps a request payload at 6 MB; large arguments go by POST /v1/payloads instead.
  'POST /v1/endpoints/{id}/submit': route({ auth: 'user', body: submitBody, maxBodyBytes: 5 * 1024 * 1024 }, async (req) => {
    const idempotencyKey = headerOf(req, 'idempotency-key', idempotencyKeyHeader);
    const out = await submitBatch({
      userId: req.caller.userId,
      endpointId: pathId(req, 'id', 'endpoint'),
      taskGroupId: req.body.task_group_id,
      tasks: req.body.tasks,
      idempotencyKey,
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
    const views = await viewsWithinBudget(tasks);
    return { body: { tasks: views.tasks, unknown, unread: views.unread } };
  }),

  'GET /v1/task-groups/{id}': route({ auth: 'user' }, async (req) => {
    const groupId = pathId(req, 'id', 'task group');
    const { limit, cursor } = pageOf(req);
    const page = await groupPage(groupId, req.caller.userId, limit, cursor);
    return { body: { task_group_id: groupId, tasks: page.tasks, next_cursor: page.next } };
  }),

  'POST /v1/tasks/{id}/cancel': route({ auth: 'user' }, async (req) => {
    const t = await cancelTask(pathId(req, 'id', 'task'), req.caller.userId);
    return { body: await taskView(t) };
  }),

  // Long-poll for results (lambdas/api/wait.ts).
  'POST /v1/tasks/wait': waitForTasks,
});
