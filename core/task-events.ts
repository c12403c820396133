import { EventEmitter } from 'node:events';
import type { TaskRecord } from './tables/task-records';

/**
 * Tasks that reached a final state in this process. The results handler (core/tasks/results.ts
 * applyResults) and every other final move (cancel, sweep, endpoint deletion) announce the ids
 * they finished here; a waiting read (POST /v1/tasks/wait) in the same process wakes at once.
 * Locally the API and the results consumer share one process, so a result reaches a waiting
 * client without polling. In AWS each Lambda has its own process: a waiting read there finds
 * nothing announced and re-reads the records at an interval instead (core/tasks/wait.ts).
 */
const finished = new EventEmitter();
finished.setMaxListeners(0);

/**
 * Say these tasks reached a final state. `records`, where the caller has them (the record its
 * final write returned), spare a waiting read the read of what it was told.
 */
export function announceFinished(taskIds: readonly string[], records: readonly TaskRecord[] = []): void {
  if (taskIds.length && finished.listenerCount('finished')) finished.emit('finished', taskIds, records);
}

/**
 * Hear the announced ids among `taskIds` (each announcement's hits in one call) until the returned
 * function is called: a waiting read subscribes before it reads, so a task finished while the read
 * is under way is heard rather than missed.
 */
export function onFinished(taskIds: Iterable<string>, hear: (ids: string[], records: readonly TaskRecord[]) => void): () => void {
  const wanted = new Set(taskIds);
  const listener = (ids: string[], records: readonly TaskRecord[]) => {
    const hits = ids.filter((id) => wanted.has(id));
    if (hits.length)
      hear(
        hits,
        records.filter((r) => wanted.has(r.task_id)),
      );
  };
  finished.on('finished', listener);
  return () => finished.off('finished', listener);
}

/** Hear every announcement, until the returned function is called. */
export function onAnyFinished(hear: (ids: readonly string[]) => void): () => void {
  finished.on('finished', hear);
  return () => finished.off('finished', hear);
}

/**
 * Resolve with the first announced ids among `taskIds` (an empty list when `ms` passes, or
 * `signal` aborts, first).
 */
export function waitForFinished(taskIds: Iterable<string>, ms: number, signal?: AbortSignal): Promise<string[]> {
  return new Promise((resolve) => {
    const done = (ids: string[]) => {
      clearTimeout(timer);
      stop();
      signal?.removeEventListener('abort', onAbort);
      resolve(ids);
    };
    const onAbort = () => done([]);
    const timer = setTimeout(() => done([]), Math.max(0, ms));
    timer.unref();
    const stop = onFinished(taskIds, (ids) => done(ids));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) done([]);
  });
}
