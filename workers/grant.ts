import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { WorkerGrant } from '../core/credentials';
import { backoffMs, sleep } from '../core/retry';

/** The endpoint secret was refused: retrying cannot help, so the agent stops and says so. */
export class SecretRefused extends Error {}

/**
 * Holds the agent's vended grant and renews it before it lapses (at 80% of its life; in AWS,
 * role chaining caps it at one hour). The AWS clients read credentials through `provider`, so a
 * renewal takes effect on their next call without rebuilding them.
 */
export class GrantKeeper {
  private grant?: WorkerGrant;
  private timer?: NodeJS.Timeout;
  private renewing?: Promise<WorkerGrant>;

  constructor(
    private readonly apiUrl: string,
    private readonly endpointId: string,
    private readonly secret: string,
    private readonly onFatal: (err: Error) => void,
    private readonly log: (msg: string, extra?: Record<string, unknown>) => void,
  ) {}

  get current(): WorkerGrant {
    if (!this.grant) throw new Error('no grant yet');
    return this.grant;
  }

  async start(): Promise<WorkerGrant> {
    return this.renew();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  readonly provider = async (): Promise<AwsCredentialIdentity> => {
    const g = this.grant && !this.expiringSoon(this.grant) ? this.grant : await this.renew();
    return {
      accessKeyId: g.credentials.access_key_id,
      secretAccessKey: g.credentials.secret_access_key,
      sessionToken: g.credentials.session_token,
      expiration: new Date(g.credentials.expiration),
    };
  };

  private expiringSoon(g: WorkerGrant): boolean {
    return new Date(g.credentials.expiration).getTime() - Date.now() < 5_000;
  }

  renew(): Promise<WorkerGrant> {
    this.renewing ??= this.fetchGrant().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private async fetchGrant(): Promise<WorkerGrant> {
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await fetch(`${this.apiUrl}/v1/endpoints/${this.endpointId}/credentials`, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.secret}` },
          signal: AbortSignal.timeout(15_000),
        });
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code ?? String(err);
        if (attempt >= 5 && !this.grant) throw new Error(`could not reach the Ferry API at ${this.apiUrl}: ${cause}`, { cause: err });
        await backoffSleep(attempt);
        continue;
      }
      if (res.status === 401 || res.status === 403 || res.status === 404) {
        const body = await res.text();
        const err = new SecretRefused(`the API refused this endpoint's secret (HTTP ${res.status}): ${body.slice(0, 300)}`);
        if (this.grant) this.onFatal(err);
        throw err;
      }
      if (!res.ok) {
        await backoffSleep(attempt);
        continue;
      }
      const grant = (await res.json()) as WorkerGrant;
      this.grant = grant;
      this.schedule(grant);
      this.log('credentials renewed', { expires: grant.credentials.expiration });
      return grant;
    }
  }

  private schedule(g: WorkerGrant): void {
    clearTimeout(this.timer);
    const life = new Date(g.credentials.expiration).getTime() - Date.now();
    this.timer = setTimeout(() => this.renew().catch(() => undefined), Math.max(1000, life * 0.8));
    this.timer.unref();
  }
}

/** Full jitter: spreads retries of many agents hitting the same fault. */
const backoffSleep = (attempt: number): Promise<void> => sleep(backoffMs(attempt, { baseMs: 250, capMs: 20_000, jitter: 'full' }));
