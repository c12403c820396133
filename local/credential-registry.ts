import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

/**
 * Who may call the local AWS servers: the stack's admin key, and the role sessions the local STS
 * has issued. The SQS, S3, DynamoDB and STS servers all consult one registry, as every AWS
 * service consults IAM. With a file, sessions outlive a restart (a worker's vended credentials
 * stay good until they expire, as in AWS); expired sessions are dropped.
 */
export interface AccessKey {
  accessKeyId: string;
  secretAccessKey: string;
}

/** A role as the local IAM knows it: the unique id is what SQS puts in a SenderId. */
export interface LocalRole {
  arn: string;
  /** IAM: role unique ids start with AROA. */
  roleId: string;
}

export interface RoleSession extends AccessKey {
  sessionToken: string;
  roleArn: string;
  roleId: string;
  sessionName: string;
  tags: Record<string, string>;
  /** epoch ms */
  expiresAt: number;
}

/** The identity a verified request was made with. */
export type Caller =
  | { kind: 'admin'; accessKeyId: string; principalId: string }
  | { kind: 'session'; accessKeyId: string; principalId: string; session: RoleSession };

export type KeyLookup =
  | { found: 'admin'; key: AccessKey; caller: Caller }
  | { found: 'session'; key: AccessKey & { sessionToken: string }; caller: Caller; expired: boolean }
  | { found: 'none' };

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** An AWS-style id: a four-letter prefix and 16 upper-case base32 characters (ASIA…, AKIA…, AROA…, AIDA…). */
export function awsStyleId(prefix: string): string {
  return prefix + [...randomBytes(16)].map((b) => ALNUM[b % 32]).join('');
}

export const newAccessKey = (): AccessKey => ({ accessKeyId: awsStyleId('AKIA'), secretAccessKey: randomBytes(30).toString('base64') });

interface SessionFile {
  version: 1;
  sessions: RoleSession[];
}

export class CredentialRegistry {
  private readonly sessions = new Map<string, RoleSession>();
  /** IAM: a user's unique id (AIDA…) is the SenderId of what it sends. */
  readonly adminPrincipalId: string;

  constructor(
    readonly admin: AccessKey,
    private readonly opts: { sessionsFile?: string; adminPrincipalId?: string } = {},
  ) {
    this.adminPrincipalId = opts.adminPrincipalId ?? `AIDA${admin.accessKeyId.slice(4, 20).padEnd(16, 'A')}`;
    if (opts.sessionsFile && existsSync(opts.sessionsFile)) {
      const saved = JSON.parse(readFileSync(opts.sessionsFile, 'utf8')) as SessionFile;
      for (const s of saved.sessions ?? []) this.sessions.set(s.accessKeyId, s);
      this.prune();
    }
  }

  /** STS AssumeRole: a fresh key, secret and token for `role`, good for `durationSeconds`. */
  issue(role: LocalRole, sessionName: string, tags: Record<string, string>, durationSeconds: number): RoleSession {
    const session: RoleSession = {
      accessKeyId: awsStyleId('ASIA'),
      secretAccessKey: randomBytes(30).toString('base64'),
      sessionToken: randomBytes(96).toString('base64'),
      roleArn: role.arn,
      roleId: role.roleId,
      sessionName,
      tags: { ...tags },
      expiresAt: Date.now() + durationSeconds * 1000,
    };
    this.prune();
    this.sessions.set(session.accessKeyId, session);
    this.save();
    return session;
  }

  lookup(accessKeyId: string): KeyLookup {
    if (accessKeyId === this.admin.accessKeyId) {
      return { found: 'admin', key: this.admin, caller: { kind: 'admin', accessKeyId, principalId: this.adminPrincipalId } };
    }
    const session = this.sessions.get(accessKeyId);
    if (!session) return { found: 'none' };
    return {
      found: 'session',
      key: session,
      caller: { kind: 'session', accessKeyId, principalId: `${session.roleId}:${session.sessionName}`, session },
      expired: Date.now() >= session.expiresAt,
    };
  }

  /** Drop sessions past their expiry (kept a minute longer, so a just-expired key answers ExpiredToken, not an unknown key). */
  prune(now = Date.now()): void {
    let dropped = false;
    for (const [id, s] of this.sessions) if (s.expiresAt + 60_000 < now) dropped = this.sessions.delete(id) || dropped;
    if (dropped) this.save();
  }

  private save(): void {
    const file = this.opts.sessionsFile;
    if (!file) return;
    const body: SessionFile = { version: 1, sessions: [...this.sessions.values()] };
    // Live secrets: readable by their owner only; a rename keeps the file whole if the process dies mid-write.
    writeFileSync(`${file}.tmp`, JSON.stringify(body), { mode: 0o600 });
    chmodSync(`${file}.tmp`, 0o600);
    renameSync(`${file}.tmp`, file);
  }
}
