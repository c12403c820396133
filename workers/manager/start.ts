import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { WorkerConfig } from '../main';
import { EndpointConfigError, loadEndpointConfig } from './config';
import { LocalProvider } from './local-provider';
import { EndpointManager } from './manager';
import type { Provider } from './provider';
import { SlurmProvider } from './slurm-provider';

export interface StartOptions {
  /** Job scripts, agent output and the manager's contact file; default ~/.ferry/endpoints/<id>. */
  stateDir?: string;
  statusFile?: string;
  pollSeconds?: number;
  log?: (line: string) => void;
}

/**
 * `ferry endpoint start --config endpoint.yaml`: runs the endpoint manager until SIGTERM/SIGINT,
 * then drains its blocks and cancels their jobs. Resolves with the exit code: 0 after a clean
 * stop, 2 for a configuration that cannot work.
 */
export async function startEndpointManager(configFile: string, o: StartOptions = {}): Promise<number> {
  const say = o.log ?? ((line: string) => console.error(line));
  let loaded;
  let worker: WorkerConfig;
  try {
    loaded = loadEndpointConfig(configFile);
    worker = JSON.parse(readFileSync(loaded.credentialsFile, 'utf8')) as WorkerConfig;
    if (!worker.api_url || !worker.endpoint_id || !worker.endpoint_secret)
      throw new EndpointConfigError(
        `${loaded.credentialsFile}: needs api_url, endpoint_id and endpoint_secret (ferry endpoint register --write-config)`,
      );
  } catch (err) {
    say(`ferry endpoint start: ${(err as Error).message}`);
    return 2;
  }
  for (const w of loaded.warnings) say(`ferry endpoint start: warning: ${w}`);
  const { config } = loaded;
  const p = config.engine.provider;
  const provider: Provider =
    p.type === 'SlurmProvider' ? new SlurmProvider(p, { maxWorkersPerNode: config.engine.max_workers_per_node }) : new LocalProvider();
  const manager = new EndpointManager({
    config,
    worker,
    credentialsFile: loaded.credentialsFile,
    provider,
    stateDir: resolve(o.stateDir ?? join(homedir(), '.ferry', 'endpoints', worker.endpoint_id)),
    statusFile: o.statusFile && resolve(o.statusFile),
    pollMs: (o.pollSeconds ?? 5) * 1000,
    visibilitySeconds: /^\d+$/.test(process.env.FERRY_VISIBILITY_SECONDS ?? '') ? Number(process.env.FERRY_VISIBILITY_SECONDS) : undefined,
  });
  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((r) => (resolveExit = r));
  const shutdown = (signal: string) => {
    say(`ferry endpoint start: ${signal}: draining blocks and cancelling their jobs`);
    manager.stop().then(
      () => resolveExit(0),
      (err) => {
        say(`ferry endpoint start: ${String(err)}`);
        resolveExit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  try {
    await manager.start();
  } catch (err) {
    say(`ferry endpoint start: ${(err as Error).message}`);
    await manager.stop(0).catch(() => undefined);
    return 2;
  }
  say(`ferry endpoint start: managing endpoint ${worker.endpoint_id} with ${provider.kind} blocks`);
  return exit;
}
