/** Task lifecycle: received → waiting-for-endpoint → running → success | failed; cancelled from any non-final state. */
export const TASK_STATES = ['received', 'waiting-for-endpoint', 'running', 'success', 'failed', 'cancelled'] as const;
export type TaskState = (typeof TASK_STATES)[number];

export const FINAL_STATES: readonly TaskState[] = ['success', 'failed', 'cancelled'];

const ALLOWED: Record<TaskState, readonly TaskState[]> = {
  received: ['waiting-for-endpoint', 'failed', 'cancelled'],
  'waiting-for-endpoint': ['running', 'success', 'failed', 'cancelled'],
  // A redelivered task (its worker died) is started again while it is running.
  running: ['running', 'success', 'failed', 'cancelled'],
  success: [],
  failed: [],
  cancelled: [],
};

export const isFinal = (s: TaskState): boolean => FINAL_STATES.includes(s);

export const canTransition = (from: TaskState, to: TaskState): boolean => ALLOWED[from].includes(to);

/** The states a task may be in for a move to `to` to be allowed; used as a DynamoDB condition. */
export const statesAllowing = (to: TaskState): TaskState[] => TASK_STATES.filter((s) => canTransition(s, to));
