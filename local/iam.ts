import { AccessPolicy, workerRoleStatements } from './access-policy';
import type { Caller, CredentialRegistry, LocalRole } from './credential-registry';
import { verifySigV4, type SignedRequest } from './sigv4';

export const LOCAL_ACCOUNT_ID = '000000000000';

/** The local worker role. IAM gives every role a unique id (AROA…); SQS names a role session's messages by it. */
export const localWorkerRole = (stage: string): LocalRole => ({
  arn: `arn:aws:iam::${LOCAL_ACCOUNT_ID}:role/ferry-${stage}-worker`,
  roleId: 'AROAFERRYLOCALWORKER',
});

/**
 * IAM for the local stack: who signed a request (SigV4 against the registry's keys) and whether
 * that identity may make it. Every local AWS server takes one.
 */
export class LocalIam {
  readonly policy: AccessPolicy;
  readonly workerRole: LocalRole;

  constructor(
    readonly registry: CredentialRegistry,
    readonly opts: { region: string; stage: string; bucket: string; resultsQueueName: string; accountId?: string },
  ) {
    const accountId = opts.accountId ?? LOCAL_ACCOUNT_ID;
    this.workerRole = localWorkerRole(opts.stage);
    this.policy = new AccessPolicy(
      this.workerRole,
      workerRoleStatements({
        region: opts.region,
        accountId,
        stage: opts.stage,
        bucket: opts.bucket,
        resultsQueueArn: `arn:aws:sqs:${opts.region}:${accountId}:${opts.resultsQueueName}`,
      }),
    );
  }

  authenticate(service: string, req: SignedRequest): Promise<Caller> {
    return verifySigV4(this.registry, service, this.opts.region, req);
  }

  allows(caller: Caller, action: string, resourceArn: string): boolean {
    return this.policy.allows(caller, action, resourceArn);
  }
}
