/**
 * AWS Signature Version 4, checked the way AWS checks it: the server signs the request again
 * with the secret it holds for the caller's key (here with the SDK's own signer,
 * @smithy/signature-v4) and compares. Header auth (`Authorization: AWS4-HMAC-SHA256 …`) and
 * presigned query auth (`X-Amz-Signature=…`) are both covered. An aws-chunked upload is
 * verified by its seed signature: the `x-amz-content-sha256` header names the streaming mode
 * and is itself signed.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { SignatureV4 } from '@smithy/signature-v4';
import type { HttpRequest, QueryParameterBag, SourceData } from '@smithy/types';
import type { Caller, CredentialRegistry } from './credential-registry';

/** Why a request was refused; each server answers it in its own service's error shape. */
export type AuthFailure = 'missing' | 'malformed' | 'unknown-key' | 'bad-signature' | 'expired' | 'skewed';

export class AuthError extends Error {
  constructor(
    readonly reason: AuthFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface SignedRequest {
  method: string;
  /** `req.url` as received: the path and query, still percent-encoded. */
  url: string;
  headers: IncomingHttpHeaders;
  /** The body, for services that sign it without an x-amz-content-sha256 header (SQS, DynamoDB, STS). */
  body?: Buffer;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
// SigV4: a request's X-Amz-Date may be at most 15 minutes from the server's clock.
const MAX_SKEW_MS = 15 * 60 * 1000;
const PRESIGN_AUTH_PARAMS = [
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-SignedHeaders',
  'X-Amz-Security-Token',
  'X-Amz-Signature',
];
const SHA256_HEADER = 'x-amz-content-sha256';
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** The hash the signer asks for: SHA-256, or HMAC-SHA256 when given a key. */
class NodeSha256 {
  private readonly hash;
  constructor(secret?: SourceData) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
}

const bytes = (d: SourceData): Buffer =>
  typeof d === 'string' ? Buffer.from(d) : ArrayBuffer.isView(d) ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.from(d);

/** The parts of a request's credential and signature, from either the Authorization header or the query. */
interface Presented {
  accessKeyId: string;
  shortDate: string;
  region: string;
  service: string;
  longDate: string;
  signedHeaders: string[];
  signature: string;
  sessionToken?: string;
  /** Presigned: seconds from longDate. */
  expires?: number;
}

/**
 * Who signed this request, or an AuthError. `service` and `region` are this server's: a
 * signature scoped to another service or region does not count, as in AWS.
 */
export async function verifySigV4(registry: CredentialRegistry, service: string, region: string, req: SignedRequest): Promise<Caller> {
  const q = req.url.indexOf('?');
  const path = q === -1 ? req.url : req.url.slice(0, q);
  const query = parseQuery(q === -1 ? '' : req.url.slice(q + 1));
  const presented = presentedAuth(req.headers, query);

  if (presented.service !== service || presented.region !== region) {
    throw new AuthError(
      'bad-signature',
      `Credential should be scoped to a valid region and service: ${region}/${service}, not ${presented.region}/${presented.service}.`,
    );
  }
  const found = registry.lookup(presented.accessKeyId);
  if (found.found === 'none') throw new AuthError('unknown-key', 'The security token included in the request is invalid.');
  if (found.found === 'session') {
    // STS: a session key is good only with its own session token.
    if (!presented.sessionToken || !sameText(presented.sessionToken, found.key.sessionToken)) {
      throw new AuthError('unknown-key', 'The security token included in the request is invalid.');
    }
    if (found.expired) throw new AuthError('expired', 'The security token included in the request is expired');
  }

  const signingDate = parseAmzDate(presented.longDate);
  if (presented.shortDate !== presented.longDate.slice(0, 8))
    throw new AuthError('bad-signature', 'The credential date does not match X-Amz-Date.');
  if (presented.expires === undefined && Math.abs(Date.now() - signingDate.getTime()) > MAX_SKEW_MS) {
    throw new AuthError('skewed', `Signature expired: ${presented.longDate} is more than 15 minutes from the server's time.`);
  }

  // The common case (SQS, DynamoDB, STS: a header-signed POST to "/"): checked here without the
  // SDK's signer, which costs several times as much per request (it re-derives its cache key with an HMAC, and awaits each hash).
  if (presented.expires === undefined && service !== 's3' && path === '/' && q === -1) {
    if (!sameText(headerSignature(req, presented, found.key.secretAccessKey), presented.signature)) {
      throw new AuthError(
        'bad-signature',
        'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
      );
    }
    return found.caller;
  }

  // The token is part of what a presigned URL signs (its query); a header-signed request lists it among its headers.
  const signer = new SignatureV4({
    service,
    region,
    credentials: {
      accessKeyId: found.key.accessKeyId,
      secretAccessKey: found.key.secretAccessKey,
      sessionToken: presented.expires !== undefined ? presented.sessionToken : undefined,
    },
    sha256: NodeSha256,
    // SigV4: every service but S3 encodes the path a second time in the canonical request.
    uriEscapePath: service !== 's3',
    applyChecksum: false,
  });
  const url = new URL(`http://${String(req.headers.host ?? 'localhost')}`);
  const headers: Record<string, string> = {};
  for (const name of presented.signedHeaders) {
    const value = req.headers[name];
    if (value === undefined) throw new AuthError('bad-signature', `The signed header ${name} is missing from the request.`);
    headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  const signable = new Set(presented.signedHeaders);

  let expected: string;
  if (presented.expires !== undefined) {
    const rest: QueryParameterBag = {};
    for (const [k, v] of Object.entries(query)) if (!PRESIGN_AUTH_PARAMS.includes(k)) rest[k] = v;
    // SigV4 query auth: the payload is never known in advance, so it is signed as UNSIGNED-PAYLOAD.
    const request: HttpRequest = {
      method: req.method,
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port) || undefined,
      path,
      query: rest,
      headers: { ...headers, [SHA256_HEADER]: 'UNSIGNED-PAYLOAD' },
    };
    const signed = await signer.presign(request, {
      signingDate,
      expiresIn: presented.expires,
      signableHeaders: signable,
      unsignableHeaders: signable.has(SHA256_HEADER) ? undefined : new Set([SHA256_HEADER]),
      unhoistableHeaders: new Set([...signable, SHA256_HEADER]),
    });
    expected = String(signed.query?.['X-Amz-Signature'] ?? '');
  } else {
    const declared = headerText(req.headers[SHA256_HEADER]);
    if (service !== 's3' && declared !== undefined) {
      // Outside S3 the body is not checked anywhere else: a declared hash must be the body's.
      const actual = req.body?.length ? createHash('sha256').update(req.body).digest('hex') : EMPTY_SHA256;
      if (declared !== actual) throw new AuthError('bad-signature', 'The x-amz-content-sha256 header does not match the body.');
    }
    const request: HttpRequest = {
      method: req.method,
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port) || undefined,
      path,
      query,
      headers,
      body: req.body,
    };
    const signed = await signer.sign(request, { signingDate, signableHeaders: signable });
    const match = /Signature=([0-9a-f]+)/.exec(String(signed.headers.authorization));
    expected = match?.[1] ?? '';
    const signedList = /SignedHeaders=([^,]+)/.exec(String(signed.headers.authorization))?.[1];
    if (signedList !== presented.signedHeaders.join(';')) expected = '';
  }
  if (!sameText(expected, presented.signature)) {
    throw new AuthError(
      'bad-signature',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
    );
  }
  return found.caller;
}

/** Signing keys by secret, date, region and service (SigV4: a key is good for one day's scope). */
const signingKeys = new Map<string, Buffer>();
const SIGNING_KEYS_KEPT = 1000;

function signingKey(secret: string, shortDate: string, region: string, service: string): Buffer {
  const id = `${shortDate}/${region}/${service}/${secret}`;
  let key = signingKeys.get(id);
  if (!key) {
    const hmac = (k: string | Buffer, data: string) => createHmac('sha256', k).update(data).digest();
    key = hmac(hmac(hmac(hmac(`AWS4${secret}`, shortDate), region), service), 'aws4_request');
    if (signingKeys.size >= SIGNING_KEYS_KEPT) signingKeys.clear();
    signingKeys.set(id, key);
  }
  return key;
}

/**
 * The signature of a header-signed request to path "/" with no query, as @smithy/signature-v4
 * computes it: the signed headers (their values trimmed, inner whitespace runs made one space)
 * plus x-amz-date, which the signer always signs; a different list than the one presented
 * cannot match (empty answer). The payload hash is the body's (a declared x-amz-content-sha256 must equal it).
 */
function headerSignature(req: SignedRequest, presented: Presented, secret: string): string {
  const names = presented.signedHeaders.includes('x-amz-date') ? presented.signedHeaders : [...presented.signedHeaders, 'x-amz-date'];
  const sorted = [...new Set(names)].sort();
  if (sorted.join(';') !== presented.signedHeaders.join(';')) return '';
  let headers = '';
  for (const name of sorted) {
    const raw = name === 'x-amz-date' ? presented.longDate : req.headers[name];
    if (raw === undefined) throw new AuthError('bad-signature', `The signed header ${name} is missing from the request.`);
    const value = (Array.isArray(raw) ? raw.join(',') : raw)
      .replace(/[\r\n]/g, ' ')
      .replace(/[ \t]+/g, ' ')
      .replace(/^ | $/g, '');
    headers += `${name}:${value}\n`;
  }
  const payloadHash = req.body?.length ? createHash('sha256').update(req.body).digest('hex') : EMPTY_SHA256;
  // Outside S3 the body is not checked anywhere else: a declared hash must be the body's.
  const declared = headerText(req.headers[SHA256_HEADER]);
  if (declared !== undefined && declared !== payloadHash)
    throw new AuthError('bad-signature', 'The x-amz-content-sha256 header does not match the body.');
  const canonical = `${req.method}\n/\n\n${headers}\n${sorted.join(';')}\n${payloadHash}`;
  const scope = `${presented.shortDate}/${presented.region}/${presented.service}/aws4_request`;
  const toSign = `${ALGORITHM}\n${presented.longDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`;
  return createHmac('sha256', signingKey(secret, presented.shortDate, presented.region, presented.service))
    .update(toSign)
    .digest('hex');
}

function presentedAuth(headers: IncomingHttpHeaders, query: QueryParameterBag): Presented {
  const authorization = headerText(headers.authorization);
  const algorithm = query['X-Amz-Algorithm'];
  if (authorization === undefined && algorithm === undefined) {
    throw new AuthError('missing', 'Request is missing Authentication Token');
  }
  if (authorization !== undefined) {
    const m = /^AWS4-HMAC-SHA256 +Credential=([^,]+), *SignedHeaders=([^,]+), *Signature=([0-9a-f]{64})$/.exec(authorization.trim());
    if (!m)
      throw new AuthError(
        'malformed',
        `Authorization header requires the ${ALGORITHM} Credential, SignedHeaders and Signature parameters.`,
      );
    const longDate = headerText(headers['x-amz-date']);
    if (!longDate) throw new AuthError('malformed', 'Authorization header requires existence of either an X-Amz-Date or a Date header.');
    return {
      ...scopeOf(m[1]!),
      longDate,
      signedHeaders: m[2]!.split(';'),
      signature: m[3]!,
      sessionToken: headerText(headers['x-amz-security-token']),
    };
  }
  const one = (name: string) => {
    const v = query[name];
    if (typeof v !== 'string' || !v) throw new AuthError('malformed', `Query-string authentication requires the ${name} parameter.`);
    return v;
  };
  if (algorithm !== ALGORITHM) throw new AuthError('malformed', `X-Amz-Algorithm only supports "${ALGORITHM}".`);
  const expires = Number(one('X-Amz-Expires'));
  if (!Number.isInteger(expires) || expires < 0) throw new AuthError('malformed', 'X-Amz-Expires must be a non-negative integer.');
  const token = query['X-Amz-Security-Token'];
  return {
    ...scopeOf(one('X-Amz-Credential')),
    longDate: one('X-Amz-Date'),
    signedHeaders: one('X-Amz-SignedHeaders').split(';'),
    signature: one('X-Amz-Signature'),
    sessionToken: typeof token === 'string' ? token : undefined,
    expires,
  };
}

function scopeOf(credential: string): Pick<Presented, 'accessKeyId' | 'shortDate' | 'region' | 'service'> {
  const parts = credential.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request' || !/^\d{8}$/.test(parts[1]!)) {
    throw new AuthError('malformed', `Credential must have the form <key>/<date>/<region>/<service>/aws4_request, not ${credential}.`);
  }
  return { accessKeyId: parts[0]!, shortDate: parts[1]!, region: parts[2]!, service: parts[3]! };
}

function parseAmzDate(text: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) throw new AuthError('malformed', `X-Amz-Date ${text} is not of the form YYYYMMDDTHHMMSSZ.`);
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}

/** The query as the signer sees it: decoded names and values; a name without `=` has the value "" (SigV4). */
function parseQuery(raw: string): QueryParameterBag {
  const query: QueryParameterBag = {};
  for (const part of raw.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    let name: string;
    let value: string;
    try {
      name = decodeURIComponent(eq === -1 ? part : part.slice(0, eq));
      value = eq === -1 ? '' : decodeURIComponent(part.slice(eq + 1));
    } catch {
      throw new AuthError('malformed', 'The query string is not valid percent-encoding.');
    }
    const prior = query[name];
    query[name] = prior === undefined || prior === null ? value : Array.isArray(prior) ? [...prior, value] : [prior, value];
  }
  return query;
}

const headerText = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(',') : v);

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
