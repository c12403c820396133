import type { Caller, LocalRole } from './credential-registry';

/**
 * What the local AWS servers let a caller do, in IAM's terms: the admin key may do anything
 * (an operator in the account); a session of the local worker role may do exactly what
 * infra/lib/worker-role.ts grants the deployed worker role, with `${aws:PrincipalTag/endpointId}`
 * resolved from the session's tag. test/infra compares these statements with the synthesized
 * policy so the two cannot drift apart.
 */
export const ENDPOINT_TAG = 'endpointId';
export const TAG_VARIABLE = `\${aws:PrincipalTag/${ENDPOINT_TAG}}`;

export interface PolicyStatement {
  sid: string;
  actions: string[];
  resources: string[];
  /** IAM condition `StringLike aws:PrincipalTag/<tag> = "?*"`: a session without the tag matches nothing. */
  requiresTag: string;
}

export interface WorkerPolicyResources {
  partition?: string;
  region: string;
  accountId: string;
  stage: string;
  bucket: string;
  resultsQueueArn: string;
}

export function workerRoleStatements(r: WorkerPolicyResources): PolicyStatement[] {
  const partition = r.partition ?? 'aws';
  return [
    {
      sid: 'OwnEndpointQueue',
      actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes'],
      resources: [`arn:${partition}:sqs:${r.region}:${r.accountId}:ferry-${r.stage}-ep-${TAG_VARIABLE}`],
      requiresTag: ENDPOINT_TAG,
    },
    { sid: 'SendResults', actions: ['sqs:SendMessage'], resources: [r.resultsQueueArn], requiresTag: ENDPOINT_TAG },
    {
      sid: 'OwnPayloadPrefix',
      actions: ['s3:GetObject', 's3:PutObject'],
      resources: [`arn:${partition}:s3:::${r.bucket}/payloads/${TAG_VARIABLE}/*`],
      requiresTag: ENDPOINT_TAG,
    },
  ];
}

/**
 * The action IAM authorises for a service operation: batch calls are authorised as their
 * single forms, and S3 HeadObject as s3:GetObject.
 */
const AUTHORISED_AS: Record<string, string> = {
  'sqs:SendMessageBatch': 'sqs:SendMessage',
  'sqs:DeleteMessageBatch': 'sqs:DeleteMessage',
  'sqs:ChangeMessageVisibilityBatch': 'sqs:ChangeMessageVisibility',
  's3:HeadObject': 's3:GetObject',
};

export class AccessPolicy {
  constructor(
    private readonly workerRole: LocalRole,
    private readonly statements: PolicyStatement[],
  ) {}

  /** IAM's answer for `caller` doing `action` (e.g. "sqs:ReceiveMessage") on the resource ARN: implicit deny unless a statement allows it. */
  allows(caller: Caller, action: string, resourceArn: string): boolean {
    if (caller.kind === 'admin') return true;
    const session = caller.session;
    if (session.roleArn !== this.workerRole.arn) return false;
    const authorised = AUTHORISED_AS[action] ?? action;
    return this.statements.some((s) => {
      const tag = session.tags[s.requiresTag];
      if (!tag) return false;
      return (
        s.actions.includes(authorised) && s.resources.some((pattern) => resourceMatches(pattern, resourceArn, { [TAG_VARIABLE]: tag }))
      );
    });
  }
}

/** IAM resource matching: `*` any run of characters, `?` one; a policy variable's value is literal text. */
export function resourceMatches(pattern: string, resource: string, variables: Record<string, string>): boolean {
  let regex = '';
  for (let i = 0; i < pattern.length;) {
    const variable = Object.keys(variables).find((v) => pattern.startsWith(v, i));
    if (variable) {
      regex += escapeRegex(variables[variable]!);
      i += variable.length;
    } else {
      const c = pattern[i]!;
      regex += c === '*' ? '.*' : c === '?' ? '.' : escapeRegex(c);
      i++;
    }
  }
  return new RegExp(`^${regex}$`, 's').test(resource);
}

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
