import { readdirSync, readFileSync } from 'node:fs';

/** The environment of every process this one may read, as NAME=value lists. */
export function processEnvironments(): string[][] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
      } catch {
        return [];
      }
    });
}

/** Alive and not a zombie (a killed child may wait a moment for its parent to reap it). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
