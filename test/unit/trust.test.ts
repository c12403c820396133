import { senderEndpoint, workerSessionName } from '../../core/credentials';
import { dlqEndpoint } from '../../core/lost-tasks';
import { AccessPolicy, resourceMatches, TAG_VARIABLE, workerRoleStatements } from '../../local/access-policy';
import type { Caller, RoleSession } from '../../local/credential-registry';

const ROLE_ID = 'AROAEXAMPLEWORKER123';
const EP = '0b6c7a2e-9f1d-4c3b-8a5e-2d4f6a8b0c1e';

describe('senderEndpoint: whose report a results message is', () => {
  it("accepts exactly '<worker role id>:ferry-ep-<endpoint id>'", () => {
    expect(workerSessionName(EP)).toBe(`ferry-ep-${EP}`);
    expect(senderEndpoint(`${ROLE_ID}:ferry-ep-${EP}`, ROLE_ID)).toBe(EP);
  });

  it('refuses every other sender', () => {
    const refused = [
      undefined,
      '',
      'local',
      '000000000000', // an account (a root or IAM user's send)
      'AIDAEXAMPLEUSER12345', // an IAM user
      `AROAOTHERROLE1234567:ferry-ep-${EP}`, // another role's session, named like a worker's
      `${ROLE_ID}:${EP}`, // the worker role under another session name
      `${ROLE_ID}:ferry-ep-`, // no endpoint
      `${ROLE_ID}ferry-ep-${EP}`,
      `x${ROLE_ID}:ferry-ep-${EP}`,
    ];
    for (const sender of refused) expect([sender, senderEndpoint(sender, ROLE_ID)]).toEqual([sender, undefined]);
    // Without the role id configured, nobody is believed.
    expect(senderEndpoint(`${ROLE_ID}:ferry-ep-${EP}`, undefined)).toBeUndefined();
  });
});

describe('dlqEndpoint: the endpoint a dead-letter queue belongs to', () => {
  it('comes from the queue name, not from any message', () => {
    expect(dlqEndpoint(`http://127.0.0.1:1/000000000000/ferry-dev-ep-${EP}-dlq`, 'ferry-dev-ep-')).toBe(EP);
    expect(dlqEndpoint(`https://sqs.us-east-1.amazonaws.com/123/ferry-dev-ep-${EP}`, 'ferry-dev-ep-')).toBeUndefined();
    expect(dlqEndpoint(`https://sqs.us-east-1.amazonaws.com/123/ferry-prod-ep-${EP}-dlq`, 'ferry-dev-ep-')).toBeUndefined();
    expect(dlqEndpoint('https://sqs.us-east-1.amazonaws.com/123/ferry-dev-ep--dlq', 'ferry-dev-ep-')).toBeUndefined();
  });
});

describe('the local worker policy', () => {
  const role = { arn: 'arn:aws:iam::000000000000:role/ferry-local-worker', roleId: ROLE_ID };
  const policy = new AccessPolicy(
    role,
    workerRoleStatements({
      region: 'us-east-1',
      accountId: '000000000000',
      stage: 'local',
      bucket: 'b',
      resultsQueueArn: 'arn:aws:sqs:us-east-1:000000000000:ferry-local-results',
    }),
  );
  const session = (tags: Record<string, string>, roleArn = role.arn): Caller => ({
    kind: 'session',
    accessKeyId: 'ASIA',
    principalId: `${ROLE_ID}:s`,
    session: { tags, roleArn } as RoleSession,
  });
  const q = (name: string) => `arn:aws:sqs:us-east-1:000000000000:${name}`;

  it('resolves the endpoint tag literally and matches whole resources', () => {
    expect(resourceMatches(`a/${TAG_VARIABLE}/*`, 'a/x/y/z', { [TAG_VARIABLE]: 'x' })).toBe(true);
    expect(resourceMatches(`a/${TAG_VARIABLE}/*`, 'a/xy/z', { [TAG_VARIABLE]: 'x' })).toBe(false);
    // A tag value is text, never a wildcard.
    expect(resourceMatches(`a/${TAG_VARIABLE}/*`, 'a/anything/z', { [TAG_VARIABLE]: '*' })).toBe(false);
  });

  it('gives a tagged session its own queue, the results queue and its own prefix, and nothing else', () => {
    const w = session({ endpointId: 'e1' });
    expect(policy.allows(w, 'sqs:ReceiveMessage', q('ferry-local-ep-e1'))).toBe(true);
    expect(policy.allows(w, 'sqs:DeleteMessageBatch', q('ferry-local-ep-e1'))).toBe(true);
    expect(policy.allows(w, 'sqs:ChangeMessageVisibilityBatch', q('ferry-local-ep-e1'))).toBe(true);
    expect(policy.allows(w, 'sqs:SendMessageBatch', q('ferry-local-results'))).toBe(true);
    expect(policy.allows(w, 's3:HeadObject', 'arn:aws:s3:::b/payloads/e1/t/args')).toBe(true);
    expect(policy.allows(w, 's3:PutObject', 'arn:aws:s3:::b/payloads/e1/t/result')).toBe(true);

    expect(policy.allows(w, 'sqs:ReceiveMessage', q('ferry-local-ep-e2'))).toBe(false);
    expect(policy.allows(w, 'sqs:ReceiveMessage', q('ferry-local-ep-e1-dlq'))).toBe(false);
    expect(policy.allows(w, 'sqs:SendMessage', q('ferry-local-ep-e1'))).toBe(false);
    expect(policy.allows(w, 'sqs:ListQueues', q('*'))).toBe(false);
    expect(policy.allows(w, 's3:GetObject', 'arn:aws:s3:::b/payloads/e2/t/args')).toBe(false);
    expect(policy.allows(w, 's3:DeleteObject', 'arn:aws:s3:::b/payloads/e1/t/args')).toBe(false);
    expect(policy.allows(w, 'dynamodb:GetItem', 'arn:aws:dynamodb:us-east-1:000000000000:table/t')).toBe(false);
  });

  it('gives nothing to a session without the tag, or of another role; everything to the admin', () => {
    expect(policy.allows(session({}), 'sqs:ReceiveMessage', q('ferry-local-ep-'))).toBe(false);
    expect(
      policy.allows(session({ endpointId: 'e1' }, 'arn:aws:iam::000000000000:role/other'), 'sqs:ReceiveMessage', q('ferry-local-ep-e1')),
    ).toBe(false);
    expect(policy.allows({ kind: 'admin', accessKeyId: 'AKIA', principalId: 'AIDA' }, 'dynamodb:Scan', '*')).toBe(true);
  });
});
