import { randomBytes } from 'node:crypto';
import { DeleteCommand, GetCommand, PutCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';
import { config } from '../config';
import { sha256Hex } from '../ids';

/** Who is calling: a user with a bearer token, or an endpoint's worker with the endpoint secret. */
export type Principal = { kind: 'user'; userId: string } | { kind: 'endpoint'; endpointId: string; userId: string };

/** Tokens table: one item per token, keyed by the SHA-256 of the token; the token itself is never stored. */
interface TokenItem {
  token_hash: string;
  kind: 'user' | 'endpoint';
  user_id: string;
  endpoint_id?: string;
  created_at: string;
  /** Epoch seconds; absent for endpoint secrets, which live until revoked. Also the table's TTL attribute. */
  expires_at?: number;
  revoked_at?: string;
}

const table = () => config().tables.tokens;
const newSecret = (prefix: string) => `${prefix}_${randomBytes(32).toString('base64url')}`;

export async function issueUserToken(userId: string, ttlSeconds = 90 * 24 * 3600): Promise<{ token: string; expiresAt: Date }> {
  const token = newSecret('fry');
  const expires = Math.floor(Date.now() / 1000) + ttlSeconds;
  const item: TokenItem = {
    token_hash: sha256Hex(token),
    kind: 'user',
    user_id: userId,
    created_at: new Date().toISOString(),
    expires_at: expires,
  };
  await dynamo().send(new PutCommand({ TableName: table(), Item: item, ConditionExpression: 'attribute_not_exists(token_hash)' }));
  return { token, expiresAt: new Date(expires * 1000) };
}

/** A new endpoint secret; returns the secret (shown once) and its hash (kept on the endpoint). */
export async function issueEndpointSecret(endpointId: string, ownerId: string): Promise<{ secret: string; hash: string }> {
  const secret = newSecret('fes');
  const hash = sha256Hex(secret);
  const item: TokenItem = {
    token_hash: hash,
    kind: 'endpoint',
    user_id: ownerId,
    endpoint_id: endpointId,
    created_at: new Date().toISOString(),
  };
  await dynamo().send(new PutCommand({ TableName: table(), Item: item, ConditionExpression: 'attribute_not_exists(token_hash)' }));
  return { secret, hash };
}

/** The principal a token stands for, or undefined if it is unknown, revoked or expired. */
export async function resolveToken(token: string): Promise<Principal | undefined> {
  if (!/^(fry|fes)_[A-Za-z0-9_-]{20,100}$/.test(token)) return undefined;
  const out = await dynamo().send(new GetCommand({ TableName: table(), Key: { token_hash: sha256Hex(token) } }));
  const item = out.Item as TokenItem | undefined;
  if (!item || item.revoked_at) return undefined;
  // DynamoDB TTL deletes lazily (within days), so expiry is checked here too.
  if (item.expires_at !== undefined && item.expires_at * 1000 <= Date.now()) return undefined;
  return item.kind === 'endpoint' && item.endpoint_id
    ? { kind: 'endpoint', endpointId: item.endpoint_id, userId: item.user_id }
    : { kind: 'user', userId: item.user_id };
}

export const revokeToken = (token: string): Promise<void> => revokeTokenHash(sha256Hex(token));

/** Marks a token revoked by its hash; an unknown hash is not an error (revoking twice is harmless). */
export async function revokeTokenHash(hash: string): Promise<void> {
  await dynamo()
    .send(
      new UpdateCommand({
        TableName: table(),
        Key: { token_hash: hash },
        UpdateExpression: 'SET revoked_at = :now',
        ConditionExpression: 'attribute_exists(token_hash)',
        ExpressionAttributeValues: { ':now': new Date().toISOString() },
      }),
    )
    .catch((err) => {
      if (err?.name !== 'ConditionalCheckFailedException') throw err;
    });
}

/** A user token as an operator sees it: never the token, only an id taken from its hash. */
export interface UserTokenInfo {
  /** The first 16 hex digits of the token's SHA-256: enough to name it, useless to call with. */
  token_id: string;
  user_id: string;
  created_at: string;
  expires_at?: string;
  revoked_at?: string;
  status: 'active' | 'expired' | 'revoked';
}

export const tokenIdOf = (hash: string): string => hash.slice(0, 16);

/**
 * Every user token (of one user, if given), newest first. A Scan: this is the operator's
 * occasional listing (`ferry token list`), never on a request path.
 */
export async function listUserTokens(userId?: string): Promise<UserTokenInfo[]> {
  const items: TokenItem[] = [];
  let start: Record<string, unknown> | undefined;
  do {
    const out = await dynamo().send(
      new ScanCommand({
        TableName: table(),
        FilterExpression: userId ? '#k = :user AND user_id = :uid' : '#k = :user',
        ExpressionAttributeNames: { '#k': 'kind' },
        ExpressionAttributeValues: { ':user': 'user', ...(userId ? { ':uid': userId } : {}) },
        ExclusiveStartKey: start,
      }),
    );
    items.push(...((out.Items ?? []) as TokenItem[]));
    start = out.LastEvaluatedKey;
  } while (start);
  const now = Date.now();
  return items
    .map((t) => ({
      token_id: tokenIdOf(t.token_hash),
      token_hash: t.token_hash,
      user_id: t.user_id,
      created_at: t.created_at,
      expires_at: t.expires_at !== undefined ? new Date(t.expires_at * 1000).toISOString() : undefined,
      revoked_at: t.revoked_at,
      status: t.revoked_at
        ? ('revoked' as const)
        : t.expires_at !== undefined && t.expires_at * 1000 <= now
          ? ('expired' as const)
          : ('active' as const),
    }))
    .sort((a, b) => b.created_at.localeCompare(a.created_at))
    .map(({ token_hash: _hash, ...info }) => info);
}

/** The full hashes of the user tokens whose id starts with `prefix`. */
export async function findUserTokenHashes(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let start: Record<string, unknown> | undefined;
  do {
    const page = await dynamo().send(
      new ScanCommand({
        TableName: table(),
        FilterExpression: '#k = :user AND begins_with(token_hash, :p)',
        ExpressionAttributeNames: { '#k': 'kind' },
        ExpressionAttributeValues: { ':user': 'user', ':p': prefix },
        ProjectionExpression: 'token_hash',
        ExclusiveStartKey: start,
      }),
    );
    out.push(...(page.Items ?? []).map((i) => String(i.token_hash)));
    start = page.LastEvaluatedKey;
  } while (start);
  return out;
}

export async function deleteTokenHash(hash: string): Promise<void> {
  await dynamo().send(new DeleteCommand({ TableName: table(), Key: { token_hash: hash } }));
}
