/** Who may make a request: the presigned URL's lifetime, then (with IAM) SigV4 and the IAM action it is authorised as. */
import type { IncomingMessage } from 'node:http';
import type { Caller } from '../credential-registry';
import type { LocalIam } from '../iam';
import { AuthError } from '../sigv4';
import { authError, S3Error } from './errors';

// SigV4: a presigned URL lives at most 7 days.
const MAX_PRESIGN_EXPIRES_SECONDS = 7 * 24 * 3600;

/** Refuse a request S3 would not take from this caller; without `iam`, only an expired presigned URL is refused. */
export async function authorize(req: IncomingMessage, bucket: string, key: string, query: URLSearchParams, iam?: LocalIam): Promise<void> {
  checkPresignedExpiry(query);
  if (!iam) return;
  const method = req.method ?? 'GET';
  let caller: Caller;
  try {
    caller = await iam.authenticate('s3', { method, url: req.url ?? '/', headers: req.headers });
  } catch (err) {
    throw err instanceof AuthError ? authError(err, query.has('X-Amz-Algorithm')) : err;
  }
  const { action, resource } = s3Permission(method, bucket, key, query);
  if (!iam.allows(caller, action, resource)) {
    throw new S3Error(
      'AccessDenied',
      403,
      `User: ${caller.principalId} is not authorized to perform: ${action} on resource: "${resource}" because no identity-based policy allows the ${action} action`,
    );
  }
}

/**
 * The IAM action and resource ARN an S3 request is authorised as, for every request S3 knows,
 * implemented here or not: a caller without the right gets AccessDenied, as in AWS, before
 * learning what this server does not implement.
 */
function s3Permission(method: string, bucket: string, key: string, query: URLSearchParams): { action: string; resource: string } {
  if (!bucket) return { action: 's3:ListAllMyBuckets', resource: '*' };
  if (!key) {
    const bucketArn = `arn:aws:s3:::${bucket}`;
    if (method === 'PUT') return { action: 's3:CreateBucket', resource: bucketArn };
    if (method === 'DELETE') return { action: 's3:DeleteBucket', resource: bucketArn };
    // S3: DeleteObjects (501 here) is authorised as s3:DeleteObject on each key; no worker may delete anything.
    if (method === 'POST' && query.has('delete')) return { action: 's3:DeleteObject', resource: `${bucketArn}/*` };
    return { action: 's3:ListBucket', resource: bucketArn };
  }
  const objectArn = `arn:aws:s3:::${bucket}/${key}`;
  const action =
    method === 'PUT' ? 's3:PutObject' : method === 'DELETE' ? 's3:DeleteObject' : method === 'HEAD' ? 's3:HeadObject' : 's3:GetObject';
  return { action, resource: objectArn };
}

/** A presigned URL carries its date and lifetime; past them it is refused, as by S3. */
function checkPresignedExpiry(query: URLSearchParams): void {
  const amzDate = query.get('X-Amz-Date');
  const expiresText = query.get('X-Amz-Expires');
  if (!query.has('X-Amz-Algorithm') && amzDate === null && expiresText === null) return;
  const m = amzDate && /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  const expires = Number(expiresText);
  if (!m || expiresText === null || !Number.isInteger(expires) || expires < 0) {
    throw new S3Error('AuthorizationQueryParametersError', 400, 'X-Amz-Date and X-Amz-Expires must be present and valid.');
  }
  if (expires > MAX_PRESIGN_EXPIRES_SECONDS) {
    throw new S3Error('AuthorizationQueryParametersError', 400, 'X-Amz-Expires must be less than a week (in seconds) that is; 604800');
  }
  const signedAt = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  const expiresAt = signedAt + expires * 1000;
  if (Date.now() > expiresAt) {
    throw new S3Error('AccessDenied', 403, 'Request has expired', {
      'X-Amz-Expires': String(expires),
      Expires: new Date(expiresAt).toISOString(),
      ServerTime: new Date().toISOString(),
    });
  }
}
