import { AssumeRoleCommand } from '@aws-sdk/client-sts';
import { endpointPrefix } from './bucket';
import { stsClient } from './clients';
import { config } from './config';
import { EndpointGone } from './errors';
import { deleteEndpointQueues, ensureEndpointQueues } from './queues/endpoint-queue';
import { getEndpoint, type EndpointRecord } from './tables/endpoints';

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

const SESSION_PREFIX = 'ferry-ep-';
/** The role session name of an endpoint's credentials (STS: at most 64 characters; a UUID id gives 45). */
export const workerSessionName = (endpointId: string): string => `${SESSION_PREFIX}${endpointId}`;

/**
 * The endpoint whose vended credentials sent an SQS message, from its SenderId, or undefined when
 * the sender is not a worker session. SQS sets SenderId to `<role unique id>:<session name>` for a
 * role session; only the worker role's sessions, named by workerSessionName, count.
 */
export function senderEndpoint(senderId: string | undefined, workerRoleId: string | undefined): string | undefined {
  if (!senderId || !workerRoleId) return undefined;
  const prefix = `${workerRoleId}:${SESSION_PREFIX}`;
  if (!senderId.startsWith(prefix)) return undefined;
  const endpointId = senderId.slice(prefix.length);
  return endpointId && workerSessionName(endpointId) === senderId.slice(workerRoleId.length + 1) ? endpointId : undefined;
}

/**
 * AssumeRole on the worker role with the endpoint id as a session tag; the role's policy reads
 * `${aws:PrincipalTag/endpointId}` so the credentials reach only this endpoint's queue and S3
 * prefix (and the results queue). Role chaining caps them at one hour. Locally the same call
 * goes to the local STS (AWS_ENDPOINT_URL_STS), whose servers enforce the same policy.
 */
async function vendWorkerCredentials(ep: EndpointRecord): Promise<WorkerGrant> {
  const cfg = config();
  const region = process.env.AWS_REGION ?? 'us-east-1';
  if (!cfg.workerRoleArn) throw new Error('FERRY_WORKER_ROLE_ARN is not set: there is no worker role to vend credentials from');
  const out = await stsClient().send(
    new AssumeRoleCommand({
      RoleArn: cfg.workerRoleArn,
      RoleSessionName: workerSessionName(ep.endpoint_id),
      // STS: role chaining caps a session at one hour.
      DurationSeconds: Math.min(cfg.credentialsTtlSeconds, 3600),
      Tags: [{ Key: 'endpointId', Value: ep.endpoint_id }],
    }),
  );
  const c = out.Credentials!;
  const credentials: WorkerGrant['credentials'] = {
    access_key_id: c.AccessKeyId!,
    secret_access_key: c.SecretAccessKey!,
    session_token: c.SessionToken,
    expiration: c.Expiration!.toISOString(),
  };
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

/**
 * A worker trades its endpoint secret for a grant. The endpoint's queues are checked first and made
 * again if they are gone (deleted outside Ferry), so an agent that starts (or restarts) always finds
 * the queue its grant names.
 */
export async function grantWorker(endpointId: string): Promise<WorkerGrant> {
  const ep = await getEndpoint(endpointId);
  if (!ep) throw new EndpointGone(endpointId);
  if ((await ensureEndpointQueues(ep)) === 'recreated' && !(await getEndpoint(endpointId, { consistent: true }))) {
    // DELETE /v1/endpoints ran meanwhile: what was just made would outlive the record naming it.
    await deleteEndpointQueues({ queueUrl: ep.queue_url, dlqUrl: ep.dlq_url });
    throw new EndpointGone(endpointId);
  }
  return vendWorkerCredentials(ep);
}
