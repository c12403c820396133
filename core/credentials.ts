import { AssumeRoleCommand, STSClient } from '@aws-sdk/client-sts';
import { endpointPrefix } from './bucket';
import { config } from './config';
import type { EndpointRecord } from './tables/endpoints';

/** What a worker agent needs to serve its endpoint: short-lived credentials and where to find its queue. */
export interface WorkerGrant {
  endpoint_id: string;
  /** The endpoint's owner: the agent trusts this user's tasks more than those of users it is shared with. */
  owner_id: string;
  credentials: { access_key_id: string; secret_access_key: string; session_token?: string; expiration: string };
  region: string;
  queue_url: string;
  dlq_url: string;
  results_queue_url: string;
  bucket: string;
  prefix: string;
  inline_limit: number;
  walltime_ms: number;
}

let sts: STSClient | undefined;

/**
 * In AWS: AssumeRole on the worker role with the endpoint id as a session tag; the role's policy
 * reads `${aws:PrincipalTag/endpointId}` so the credentials reach only this endpoint's queue and
 * S3 prefix (and the results queue). Role chaining caps them at one hour. Without a worker role
 * (local mode) the local servers take any credentials, so fixed local ones are handed out.
 */
export async function vendWorkerCredentials(ep: EndpointRecord): Promise<WorkerGrant> {
  const cfg = config();
  const region = process.env.AWS_REGION ?? 'us-east-1';
  let credentials: WorkerGrant['credentials'];
  if (cfg.workerRoleArn) {
    sts ??= new STSClient({});
    const out = await sts.send(
      new AssumeRoleCommand({
        RoleArn: cfg.workerRoleArn,
        RoleSessionName: `ferry-ep-${ep.endpoint_id}`.slice(0, 64),
        DurationSeconds: Math.min(cfg.credentialsTtlSeconds, 3600),
        Tags: [{ Key: 'endpointId', Value: ep.endpoint_id }],
      }),
    );
    const c = out.Credentials!;
    credentials = { access_key_id: c.AccessKeyId!, secret_access_key: c.SecretAccessKey!, session_token: c.SessionToken, expiration: c.Expiration!.toISOString() };
  } else {
    credentials = {
      access_key_id: 'ferry-local',
      secret_access_key: 'ferry-local',
      expiration: new Date(Date.now() + cfg.credentialsTtlSeconds * 1000).toISOString(),
    };
  }
  return {
    endpoint_id: ep.endpoint_id,
    owner_id: ep.owner,
    credentials,
    region,
    queue_url: ep.queue_url,
    dlq_url: ep.dlq_url,
    results_queue_url: cfg.resultsQueueUrl,
    bucket: cfg.bucket,
    prefix: endpointPrefix(ep.endpoint_id),
    inline_limit: cfg.inlineLimit,
    walltime_ms: ep.walltime_ms,
  };
}
