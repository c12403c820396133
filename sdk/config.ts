import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface Credentials {
  apiUrl: string;
  token: string;
}

/** Where credentials files are looked for, in order (shared with the Python client). */
export function credentialsFiles(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string[] {
  return [env.FERRY_CREDENTIALS, join(cwd, '.ferry', 'credentials.json'), join(homedir(), '.ferry', 'credentials.json')].filter(
    (f): f is string => Boolean(f),
  );
}

/** API URL and token: from arguments, else FERRY_API_URL / FERRY_TOKEN, else the first credentials file found. */
export function resolveCredentials(given: Partial<Credentials> = {}, env: NodeJS.ProcessEnv = process.env): Credentials {
  let apiUrl = given.apiUrl ?? env.FERRY_API_URL;
  let token = given.token ?? env.FERRY_TOKEN;
  if (!apiUrl || !token) {
    for (const file of credentialsFiles(env)) {
      if (!existsSync(file)) continue;
      const saved = JSON.parse(readFileSync(file, 'utf8')) as { api_url?: string; token?: string };
      apiUrl ??= saved.api_url;
      token ??= saved.token;
      break;
    }
  }
  if (!apiUrl || !token) {
    throw new Error(
      'no Ferry credentials: pass apiUrl and token, set FERRY_API_URL and FERRY_TOKEN, run `ferry login`, or `npm start` for a local stack',
    );
  }
  return { apiUrl: apiUrl.replace(/\/+$/, ''), token };
}
