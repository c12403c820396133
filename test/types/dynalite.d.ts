// dynalite ships no type declarations: what the tests use of it.
declare module 'dynalite' {
  import type { Server } from 'node:http';
  function dynalite(options?: Record<string, unknown>): Server;
  export = dynalite;
}

declare module 'dynalite/validations' {
  export function checkTypes(data: unknown, types: Record<string, unknown>): unknown;
  export function toLowerFirst(s: string): string;
}
