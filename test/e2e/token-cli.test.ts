import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller } from '../helpers/api';
import { runCommand } from '../helpers/proc';

jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');

const ferry = (args: string[], env: Record<string, string | undefined>) =>
  runCommand(process.execPath, [join(ROOT, 'cli', 'bin.js'), ...args], { env });

describe('ferry token against the local stack (no flags)', () => {
  let stack: LocalStack;
  let home: string;
  // The stack keeps its admin credentials in <data dir>/aws.json, where `npm start` would.
  const local = (args: string[]) => ferry(args, { FERRY_HOME: home, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined });

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'ferry-home-'));
    stack = await startLocalStack({ dataDir: home, authorizerCacheSeconds: 0 });
  });
  afterAll(async () => stack?.close());

  it('creates a token a second user can call the API with, lists it without the token, and revokes it by id', async () => {
    const created = await local(['--json', 'token', 'create', '--user', 'bob', '--days', '7']);
    expect(created.stderr).not.toMatch(/fry_/); // the token is printed once, on stdout only
    expect(created.code).toBe(0);
    const { token, token_id } = JSON.parse(created.stdout);
    expect(token).toMatch(/^fry_/);
    const asBob = caller(stack.apiUrl, token);
    expect((await asBob('GET', '/v1/endpoints')).status).toBe(200);

    const listed = await local(['--json', 'token', 'list', '--user', 'bob']);
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout);
    expect(rows).toEqual([expect.objectContaining({ token_id, user_id: 'bob', status: 'active' })]);
    expect(listed.stdout).not.toContain(token);
    const human = await local(['token', 'list']);
    expect(human.stdout).toMatch(/^TOKEN_ID\s+USER_ID\s+STATUS/);

    const revoked = await local(['--json', 'token', 'revoke', token_id]);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toEqual({ token_id, revoked: true });
    expect((await asBob('GET', '/v1/endpoints')).status).toBe(401);
    expect(JSON.parse((await local(['--json', 'token', 'list', '--user', 'bob'])).stdout)[0].status).toBe('revoked');
  });

  it('revokes by the token itself, and refuses bad input with exit 2', async () => {
    const { token } = JSON.parse((await local(['--json', 'token', 'create', '--user', 'carol'])).stdout);
    expect((await local(['token', 'revoke', token])).code).toBe(0);
    expect((await caller(stack.apiUrl, token)('GET', '/v1/endpoints')).status).toBe(401);
    expect((await local(['token', 'revoke', token])).code).toBe(1); // already revoked: said, not hidden
    expect((await local(['token', 'create', '--user', 'no spaces'])).code).toBe(2);
    expect((await local(['token', 'create', '--user', 'dave', '--days', '0'])).code).toBe(2);
    expect((await local(['token', 'revoke', 'xyz'])).code).toBe(2);
    expect((await local(['token', 'revoke', '0123456789abcdef'])).code).toBe(1);
  });

  it('says how to start a local stack when there is none', async () => {
    const out = await ferry(['token', 'list'], { FERRY_HOME: mkdtempSync(join(tmpdir(), 'ferry-empty-')) });
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/no local stack .* npm start/);
  });
});

describe('ferry token --stage (a deployed stage, here a stack named like one)', () => {
  let stack: LocalStack;
  beforeAll(async () => {
    stack = await startLocalStack({ stage: 'dev', authorizerCacheSeconds: 0 });
  });
  afterAll(async () => stack?.close());

  it('writes ferry-<stage>-tokens with the default AWS credentials and region', async () => {
    // As an operator with AWS credentials would: the SDK's default chain and endpoint variables.
    const env = { ...stack.awsEnv, FERRY_HOME: '/nonexistent' };
    const created = await ferry(['--json', 'token', 'create', '--stage', 'dev', '--user', 'alice'], env);
    expect(created.code).toBe(0);
    const { token } = JSON.parse(created.stdout);
    expect((await caller(stack.apiUrl, token)('GET', '/v1/endpoints')).status).toBe(200);
    expect((await ferry(['token', 'list', '--stage', 'Bad_Stage'], env)).code).toBe(2);
  });
});
