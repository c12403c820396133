export { Client, UPLOAD_THRESHOLD, type ClientOptions, type FunctionSpec, type RunOptions } from './client';
export { Executor, type ExecutorOptions } from './executor';
export { ComputeFuture } from './future';
export { FerryApiError, RemoteError, ResultsUnavailable, TaskCancelled, TaskPending, TaskTimeout } from './errors';
export { MPIFunction, ShellFunction, ShellResult, type ShellFunctionOptions } from './shell';
export { resolveCredentials, credentialsFiles, type Credentials } from './config';
export type * from './types';
