/** S3's error answers: a code, an HTTP status, a message, and the extra fields and headers S3 adds to some. */
import { AuthError, type AuthFailure } from '../sigv4';

export class S3Error extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    /** Extra elements of the XML answer, e.g. `{ Key: 'a/b' }`. */
    readonly details: Record<string, string> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const noSuchBucket = (bucket: string) =>
  new S3Error('NoSuchBucket', 404, 'The specified bucket does not exist', { BucketName: bucket });
export const noSuchKey = (key: string) => new S3Error('NoSuchKey', 404, 'The specified key does not exist.', { Key: key });
export const notImplemented = (what: string) =>
  new S3Error('NotImplemented', 501, `${what} is not implemented by Ferry's local S3 server.`);
export const invalidArgument = (message: string, name: string, value: string) =>
  new S3Error('InvalidArgument', 400, message, { ArgumentName: name, ArgumentValue: value });
export const invalidRequest = (message: string) => new S3Error('InvalidRequest', 400, message);
export const badDigest = (what: string) =>
  new S3Error('BadDigest', 400, `The ${what} you specified did not match the calculated checksum.`);
export const incompleteBody = (message: string) => new S3Error('IncompleteBody', 400, message);

/** The methods S3 itself takes on each kind of resource (its Allow header). */
const S3_METHODS = { SERVICE: 'GET', BUCKET: 'GET, HEAD, PUT, POST, DELETE', OBJECT: 'GET, HEAD, PUT, DELETE' } as const;

/** A method S3 has for the resource, but this server does not: 501; one S3 has not: 405. */
export function unsupportedMethod(method: string, resourceType: keyof typeof S3_METHODS): S3Error {
  const allow = S3_METHODS[resourceType];
  const what = { SERVICE: 'the service', BUCKET: 'a bucket', OBJECT: 'an object' }[resourceType];
  if (allow.split(', ').includes(method)) return notImplemented(`${method} on ${what}`);
  return new S3Error(
    'MethodNotAllowed',
    405,
    'The specified method is not allowed against this resource.',
    { Method: method, ResourceType: resourceType },
    { allow },
  );
}

/** Anything not an S3Error is a 500 InternalError. */
export const asS3Error = (err: unknown): S3Error =>
  err instanceof S3Error ? err : new S3Error('InternalError', 500, `We encountered an internal error: ${(err as Error)?.message ?? err}`);

/** S3's answers to a request it cannot authenticate (HTTP status as S3 gives them). */
export function authError(err: AuthError, presigned: boolean): S3Error {
  const table: Record<AuthFailure, [string, number]> = {
    missing: ['AccessDenied', 403],
    malformed: [presigned ? 'AuthorizationQueryParametersError' : 'AuthorizationHeaderMalformed', 400],
    'unknown-key': ['InvalidAccessKeyId', 403],
    'bad-signature': ['SignatureDoesNotMatch', 403],
    skewed: ['RequestTimeTooSkewed', 403],
    expired: ['ExpiredToken', 400],
  };
  const [code, status] = table[err.reason];
  const message =
    err.reason === 'unknown-key'
      ? 'The AWS Access Key Id you provided does not exist in our records.'
      : err.reason === 'expired'
        ? 'The provided token has expired.'
        : err.message;
  return new S3Error(code, status, message);
}
