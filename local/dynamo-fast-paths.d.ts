/** local/dynamo-fast-paths.js, plain JavaScript: what TypeScript callers use of it. */
export function install(): void;
export function compiledCheckTypes<F extends (data: unknown, types: Record<string, unknown>) => unknown>(original: F): F;
