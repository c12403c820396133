/**
 * Runtime names and argument codecs: one list each, shared by the API, the workers and the SDK.
 * This module imports nothing, so the SDK's bundle may carry it.
 */

/** Runtimes a function can have. shell and mpi need no language runtime: the agent runs them with /bin/bash. */
export const FUNCTION_RUNTIMES = ['node', 'python', 'shell', 'mpi'] as const;
export type FunctionRuntime = (typeof FUNCTION_RUNTIMES)[number];

/** Runtimes served by a warm language process in the worker's pool (workers/runtime/pool.ts). */
export const PROCESS_RUNTIMES = ['node', 'python'] as const;
export type ProcessRuntime = (typeof PROCESS_RUNTIMES)[number];

const isProcessRuntime = (name: string): name is ProcessRuntime => (PROCESS_RUNTIMES as readonly string[]).includes(name);

/** Runtimes that run a command (a ShellFunction's, or an MPIFunction's under mpiexec) with /bin/bash. */
export const COMMAND_RUNTIMES = ['shell', 'mpi'] as const;
export const isCommandRuntime = (name: string): name is (typeof COMMAND_RUNTIMES)[number] =>
  (COMMAND_RUNTIMES as readonly string[]).includes(name);

/**
 * A comma-separated list of process runtimes (FERRY_RUNTIMES, `--runtimes`); undefined when unset.
 * Throws on a name that is not one of PROCESS_RUNTIMES, and on a list that names none.
 */
export function parseProcessRuntimes(list: string | undefined): ProcessRuntime[] | undefined {
  if (list === undefined) return undefined;
  const names = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!names.length) throw new Error(`no runtime named (runtimes: ${PROCESS_RUNTIMES.join(', ')})`);
  const runtimes = names.filter(isProcessRuntime);
  if (runtimes.length < names.length) {
    const unknown = names.filter((n) => !isProcessRuntime(n));
    throw new Error(`unknown runtime ${unknown.join(', ')} (runtimes: ${PROCESS_RUNTIMES.join(', ')})`);
  }
  return runtimes;
}

/** How a payload's bytes are encoded: JSON for every runtime, or a runtime's own serializer. */
export const CODECS = ['json', 'node-v8', 'python-pickle'] as const;
export type Codec = (typeof CODECS)[number];

/** The argument codecs each runtime reads; a runtime answers in the codec its arguments came in. A command takes JSON kwargs. */
export const RUNTIME_CODECS: Readonly<Record<FunctionRuntime, readonly Codec[]>> = {
  node: ['json', 'node-v8'],
  python: ['json', 'python-pickle'],
  shell: ['json'],
  mpi: ['json'],
};
