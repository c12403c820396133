#!/usr/bin/env node
/**
 * Issue a user token for a deployed Ferry stage. There is no signup route: whoever holds AWS
 * credentials that may write the stage's tokens table is the administrator.
 *
 *   npx tsx infra/bin/create-token.ts --stage dev --user alice [--days 90] [--region us-east-1]
 *
 * It writes the token's SHA-256 (never the token) to `ferry-<stage>-tokens` with the AWS SDK's
 * default credentials and region, through the same core/tables/tokens.ts the API reads it with,
 * and prints the token once. This is an operator's tool run by hand; the CDK app never imports it.
 */
import { parseArgs } from 'node:util';

export interface CreateTokenOptions {
  stage: string;
  user: string;
  days: number;
}

export function parseCreateTokenArgs(argv: string[]): CreateTokenOptions & { region?: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      stage: { type: 'string' },
      user: { type: 'string' },
      days: { type: 'string', default: '90' },
      region: { type: 'string' },
    },
    strict: true,
  });
  if (!values.stage || !/^[a-z][a-z0-9-]{0,19}$/.test(values.stage)) throw new Error('--stage is required: the stage you deployed (-c stage=...)');
  // User ids are opaque to Ferry: they own functions and endpoints and are named in endpoint sharing.
  if (!values.user || !/^[A-Za-z0-9._@+-]{1,128}$/.test(values.user)) throw new Error('--user is required: 1-128 letters, digits or ._@+-');
  const days = Number(values.days);
  if (!Number.isInteger(days) || days < 1 || days > 3650) throw new Error('--days must be a whole number of days from 1 to 3650');
  return { stage: values.stage, user: values.user, days, region: values.region };
}

/** Issue the token; the stage's table name comes from core/config.ts, as in the deployed Lambdas. */
export async function createToken(o: CreateTokenOptions): Promise<{ token: string; expiresAt: Date; table: string }> {
  process.env.FERRY_STAGE = o.stage;
  const { config, resetConfig } = await import('../../core/config');
  resetConfig();
  const { issueUserToken } = await import('../../core/tables/tokens');
  const out = await issueUserToken(o.user, o.days * 86400);
  return { ...out, table: config().tables.tokens };
}

async function main(): Promise<void> {
  const o = parseCreateTokenArgs(process.argv.slice(2));
  if (o.region) process.env.AWS_REGION = o.region;
  const { token, expiresAt, table } = await createToken(o);
  console.error(`Token for user "${o.user}" on stage ${o.stage} (table ${table}), valid until ${expiresAt.toISOString()}.`);
  console.error('It is shown only this once; store it like a password.');
  console.log(token);
}

if (require.main === module) {
  main().catch((err) => {
    const name = (err as { name?: string }).name;
    const hint =
      name === 'ResourceNotFoundException'
        ? ' (no such table: is the stage deployed in this region? pass --region or set AWS_REGION)'
        : name === 'CredentialsProviderError'
          ? ' (no AWS credentials: set AWS_PROFILE or run aws sso login)'
          : '';
    console.error(`create-token: ${(err as Error).message}${hint}`);
    process.exit(1);
  });
}
