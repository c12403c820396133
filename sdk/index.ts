export { Client, UPLOAD_THRESHOLD, type ClientOptions, type FunctionSpec } from './client';
export { Executor, type ExecutorOptions } from './executor';
export { ComputeFuture } from './future';
export { FerryApiError, RemoteError, TaskCancelled, TaskPending, TaskTimeout } from './errors';
export { resolveCredentials, credentialsFiles, type Credentials } from './config';
export type * from './types';
