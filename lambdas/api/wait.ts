import { waitForAnyFinished } from '../../core/tasks/wait';
import { route } from '../http';
import { waitTasksBody } from '../schemas';

/** POST /v1/tasks/wait: a long poll for the first of the asked tasks to finish (core/tasks/wait.ts). */
export const waitForTasks = route({ auth: 'user', body: waitTasksBody }, async ({ caller, body }) => ({
  body: await waitForAnyFinished(body.task_ids, caller.userId, body.wait_ms),
}));
