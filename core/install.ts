import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where this copy of Ferry runs from: this repository's TypeScript sources (through tsx), or one
 * of the bundles `npm run pack` and `npm start` build (the CLI package, dist/worker), in which
 * every module shares its bundle file's name and folder.
 */
export const fromBundle = !__filename.endsWith('.ts');

/**
 * The local stack's data (`npm start`, `ferry local up`, `ferry token`): FERRY_HOME if set, else
 * .ferry/ in this repository, else ~/.ferry/local for an installed CLI.
 */
export function localDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_HOME) return env.FERRY_HOME;
  return fromBundle ? join(homedir(), '.ferry', 'local') : join(__dirname, '..', '.ferry');
}
