import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { resetClients } from '../core/clients';
import { config, resetConfig } from '../core/config';
import { localDataDir } from '../core/install';
import { sha256Hex } from '../core/ids';
import { findUserTokenHashes, issueUserToken, listUserTokens, resolveToken, revokeTokenHash, tokenIdOf } from '../core/tables/tokens';
import { table } from './output';

/**
 * `ferry token`: the operator's tool for user tokens. There is no sign-up route: whoever may
 * write a stage's tokens table is its administrator. Without `--stage` it manages the local
 * stack of `npm start`, reaching its DynamoDB with the admin credentials the stack keeps in
 * `.ferry/aws.json` (mode 0600); with `--stage` it uses the AWS SDK's default credentials and
 * region against `ferry-<stage>-tokens`, through the same core/tables/tokens.ts the API reads.
 */

/** Where `npm start` keeps its data (local/start.ts uses the same rule). */

/** The local stack's admin credentials file, as local/stack.ts writes it. */
interface LocalAwsFile {
  region: string;
  access_key_id: string;
  secret_access_key: string;
  endpoints: { dynamodb: string };
}

export interface TokenTarget {
  stage?: string;
  region?: string;
}

export class TokenTargetError extends Error {}

const STAGE = /^[a-z][a-z0-9-]{0,19}$/;
// User ids are opaque to Ferry: they own functions and endpoints and are named in endpoint sharing.
export const USER_ID = /^[A-Za-z0-9._@+-]{1,128}$/;

/** Points this process's AWS SDK and Ferry configuration at the chosen tokens table. */
export async function useTokenTarget(t: TokenTarget): Promise<string> {
  if (t.stage !== undefined) {
    if (!STAGE.test(t.stage))
      throw new TokenTargetError('--stage must be the stage you deployed (-c stage=...): 1-20 lowercase letters, digits and dashes');
    process.env.FERRY_STAGE = t.stage;
    if (t.region) process.env.AWS_REGION = t.region;
  } else {
    const file = join(localDataDir(), 'aws.json');
    if (!existsSync(file))
      throw new TokenTargetError(`no local stack at ${localDataDir()} (run npm start first), or pass --stage for a deployed one`);
    const aws = JSON.parse(readFileSync(file, 'utf8')) as LocalAwsFile;
    Object.assign(process.env, {
      FERRY_STAGE: 'local',
      AWS_REGION: aws.region,
      AWS_ACCESS_KEY_ID: aws.access_key_id,
      AWS_SECRET_ACCESS_KEY: aws.secret_access_key,
      AWS_ENDPOINT_URL_DYNAMODB: aws.endpoints.dynamodb,
    });
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
  }
  resetConfig();
  resetClients();
  return config().tables.tokens;
}

/** A hint for the errors an operator meets first. */
export function tokenErrorHint(err: unknown): string {
  const name = (err as { name?: string })?.name;
  if (name === 'ResourceNotFoundException')
    return ' (no such table: is the stage deployed in this region? pass --region or set AWS_REGION)';
  if (name === 'CredentialsProviderError') return ' (no AWS credentials: set AWS_PROFILE or run aws sso login)';
  if (
    (err as { code?: string; cause?: { code?: string } })?.cause?.code === 'ECONNREFUSED' ||
    (err as { code?: string })?.code === 'ECONNREFUSED'
  ) {
    return ' (the local stack is not running: start it with npm start)';
  }
  return '';
}

type Print = (human: string, data: unknown) => void;

export function addTokenCommands(program: Command, print: Print, fail: (message: string, usage?: boolean) => never): void {
  const token = program.command('token').description('issue, list and revoke user tokens (operator; the local stack unless --stage)');
  const target = (c: Command) =>
    c
      .option('--stage <stage>', 'a deployed stage (default: the local stack of npm start)')
      .option('--region <region>', "the stage's AWS region (default: AWS_REGION)");
  const open = async (o: TokenTarget) => {
    try {
      return await useTokenTarget(o);
    } catch (err) {
      if (err instanceof TokenTargetError) fail(err.message, true);
      throw err;
    }
  };
  const guard = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (err) {
      return fail(`${(err as Error).message}${tokenErrorHint(err)}`);
    }
  };

  target(
    token
      .command('create')
      .description('issue a token for a user; it is printed once and only its SHA-256 is stored')
      .requiredOption('--user <userId>', 'the user id (1-128 letters, digits or ._@+-)')
      .option('--days <n>', 'days until it expires (1-3650)', '90'),
  ).action(async (o: TokenTarget & { user: string; days: string }) => {
    if (!USER_ID.test(o.user)) fail('--user must be 1-128 letters, digits or ._@+-', true);
    const days = Number(o.days);
    if (!Number.isInteger(days) || days < 1 || days > 3650) fail('--days must be a whole number of days from 1 to 3650', true);
    const tableName = await open(o);
    const out = await guard(() => issueUserToken(o.user, days * 86400));
    console.error(
      `Token for user "${o.user}" (table ${tableName}), valid until ${out.expiresAt.toISOString()}. It is shown only this once; store it like a password.`,
    );
    print(out.token, {
      token: out.token,
      token_id: tokenIdOf(sha256Hex(out.token)),
      user_id: o.user,
      expires_at: out.expiresAt.toISOString(),
    });
  });

  target(
    token
      .command('list')
      .description('user tokens: id, user, created, expires, status (never the tokens)')
      .option('--user <userId>', "only this user's"),
  ).action(async (o: TokenTarget & { user?: string }) => {
    await open(o);
    const tokens = await guard(() => listUserTokens(o.user));
    print(table(tokens as never[], ['token_id', 'user_id', 'status', 'created_at', 'expires_at']), tokens);
  });

  target(
    token
      .command('revoke <tokenOrId>')
      .description('revoke a token, given the token itself or its id from `ferry token list` (API Gateway may honour it for 30 s more)'),
  ).action(async (tokenOrId: string, o: TokenTarget) => {
    await open(o);
    let hash: string;
    if (/^fry_/.test(tokenOrId)) {
      const principal = await guard(() => resolveToken(tokenOrId));
      if (!principal) fail('that token is unknown, expired or already revoked');
      hash = sha256Hex(tokenOrId);
    } else {
      if (!/^[0-9a-f]{8,64}$/.test(tokenOrId))
        fail('give the token (fry_…) or its id (8 or more hex digits, from `ferry token list`)', true);
      const hashes = await guard(() => findUserTokenHashes(tokenOrId));
      if (!hashes.length) fail(`no user token has id ${tokenOrId}`);
      if (hashes.length > 1) fail(`${hashes.length} tokens have ids starting ${tokenOrId}; give more digits`, true);
      hash = hashes[0]!;
    }
    await guard(() => revokeTokenHash(hash));
    print(`revoked ${tokenIdOf(hash)}`, { token_id: tokenIdOf(hash), revoked: true });
  });
}
