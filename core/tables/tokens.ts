import { randomBytes } from 'node:crypto';
import { DeleteCommand, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
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
  const item: TokenItem = { token_hash: sha256Hex(token), kind: 'user', user_id: userId, created_at: new Date().toISOString(), expires_at: expires };
  await dynamo().send(new PutCommand({ TableName: table(), Item: item, ConditionExpression: 'attribute_not_exists(token_hash)' }));
  return { token, expiresAt: new Date(expires * 1000) };
}

/** A new endpoint secret; returns the secret (shown once) and its hash (kept on the endpoint). */
export async function issueEndpointSecret(endpointId: string, ownerId: string): Promise<{ secret: string; hash: string }> {
  const secret = newSecret('fes');
  const hash = sha256Hex(secret);
  const item: TokenItem = { token_hash: hash, kind: 'endpoint', user_id: ownerId, endpoint_id: endpointId, created_at: new Date().toISOString() };
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

export async function revokeToken(token: string): Promise<void> {
  await dynamo().send(
    new UpdateCommand({
      TableName: table(),
      Key: { token_hash: sha256Hex(token) },
      UpdateExpression: 'SET revoked_at = :now',
      ConditionExpression: 'attribute_exists(token_hash)',
      ExpressionAttributeValues: { ':now': new Date().toISOString() },
    }),
  ).catch((err) => {
    if (err?.name !== 'ConditionalCheckFailedException') throw err;
  });
}

export async function deleteTokenHash(hash: string): Promise<void> {
  await dynamo().send(new DeleteCommand({ TableName: table(), Key: { token_hash: hash } }));
}
