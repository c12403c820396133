/**
 * STS on loopback: AssumeRole only, in the AWS Query protocol that @aws-sdk/client-sts speaks
 * (`POST /`, form-encoded `Action=AssumeRole&…`, an XML answer). It lets core/credentials.ts
 * vend worker credentials locally by the very code path it uses in AWS. Only the admin key may
 * call it (in AWS only the credentials handler's role may assume the worker role), and only
 * for the local worker role with exactly one session tag, endpointId, as the role's trust
 * policy demands (infra/lib/worker-role.ts).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { ENDPOINT_TAG } from './access-policy';
import type { LocalIam } from './iam';
import { listenOnLoopback, type LoopbackServer } from './listen';
import { AuthError, type AuthFailure } from './sigv4';

export type StsServer = LoopbackServer;

// STS: a role session lasts at most its role's MaxSessionDuration (the worker role: one hour).
const MAX_SESSION_SECONDS = 3600;
const DEFAULT_SESSION_SECONDS = 3600;
const SESSION_NAME = /^[\w+=,.@-]{2,64}$/;

class StsError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const AUTH_ERRORS: Record<AuthFailure, [string, number]> = {
  missing: ['MissingAuthenticationToken', 403],
  malformed: ['IncompleteSignature', 400],
  'unknown-key': ['InvalidClientTokenId', 403],
  'bad-signature': ['SignatureDoesNotMatch', 403],
  skewed: ['SignatureDoesNotMatch', 403],
  expired: ['ExpiredToken', 403],
};

export async function startStsServer(opts: { iam: LocalIam; port?: number; host?: string }): Promise<StsServer> {
  const server = createServer((req, res) => void handle(opts.iam, req, res));
  return listenOnLoopback(server, opts.port, opts.host);
}

async function handle(iam: LocalIam, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const requestId = randomUUID();
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    let caller;
    try {
      caller = await iam.authenticate('sts', { method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body });
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      const [code, status] = AUTH_ERRORS[err.reason];
      throw new StsError(code, status, err.message);
    }
    const form = new URLSearchParams(body.toString('utf8'));
    const action = form.get('Action');
    if (req.method !== 'POST' || action !== 'AssumeRole')
      throw new StsError('InvalidAction', 400, `Could not find operation ${action ?? req.method} for version 2011-06-15`);
    const roleArn = form.get('RoleArn') ?? '';
    if (caller.kind !== 'admin' || roleArn !== iam.workerRole.arn) {
      throw new StsError(
        'AccessDenied',
        403,
        `User: ${caller.principalId} is not authorized to perform: sts:AssumeRole on resource: ${roleArn}`,
      );
    }
    const sessionName = form.get('RoleSessionName') ?? '';
    if (!SESSION_NAME.test(sessionName))
      throw new StsError(
        'ValidationError',
        400,
        `1 validation error detected: Value '${sessionName}' at 'roleSessionName' failed to satisfy constraint`,
      );
    const tags: Record<string, string> = {};
    for (let i = 1; form.has(`Tags.member.${i}.Key`); i++)
      tags[form.get(`Tags.member.${i}.Key`)!] = form.get(`Tags.member.${i}.Value`) ?? '';
    // The worker role's trust policy: aws:RequestTag/endpointId like "?*", and no other tag key.
    if (!tags[ENDPOINT_TAG] || Object.keys(tags).some((k) => k !== ENDPOINT_TAG)) {
      throw new StsError(
        'AccessDenied',
        403,
        `User: ${caller.principalId} is not authorized to perform: sts:TagSession on resource: ${roleArn}`,
      );
    }
    const asked = form.has('DurationSeconds') ? Number(form.get('DurationSeconds')) : DEFAULT_SESSION_SECONDS;
    if (!Number.isInteger(asked) || asked < 1) throw new StsError('ValidationError', 400, 'DurationSeconds must be a positive integer.');
    const session = iam.registry.issue(iam.workerRole, sessionName, tags, Math.min(asked, MAX_SESSION_SECONDS));
    sendXml(
      res,
      200,
      `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>` +
        `<Credentials><AccessKeyId>${session.accessKeyId}</AccessKeyId><SecretAccessKey>${xml(session.secretAccessKey)}</SecretAccessKey>` +
        `<SessionToken>${xml(session.sessionToken)}</SessionToken><Expiration>${new Date(session.expiresAt).toISOString()}</Expiration></Credentials>` +
        `<AssumedRoleUser><AssumedRoleId>${session.roleId}:${xml(sessionName)}</AssumedRoleId>` +
        `<Arn>${xml(roleArn.replace(':iam::', ':sts::').replace(':role/', ':assumed-role/'))}/${xml(sessionName)}</Arn></AssumedRoleUser>` +
        `<PackedPolicySize>1</PackedPolicySize></AssumeRoleResult><ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></AssumeRoleResponse>`,
    );
  } catch (err) {
    const e =
      err instanceof StsError
        ? err
        : new StsError('InternalFailure', 500, 'The request processing has failed because of an unknown error.');
    if (!(err instanceof StsError)) console.error('sts-server: request failed', err);
    sendXml(
      res,
      e.status,
      `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>${e.status >= 500 ? 'Receiver' : 'Sender'}</Type>` +
        `<Code>${e.code}</Code><Message>${xml(e.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
    );
  }
}

function sendXml(res: ServerResponse, status: number, body: string): void {
  const bytes = Buffer.from(body);
  res.writeHead(status, { 'content-type': 'text/xml', 'content-length': String(bytes.length), 'x-amzn-requestid': randomUUID() });
  res.end(bytes);
}

const xml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
