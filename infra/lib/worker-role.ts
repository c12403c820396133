import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { endpointQueuePrefix } from './context';
import { acknowledgeWildcard } from './ferry-function';

/** The session tag core/credentials.ts sets on AssumeRole; every statement below keys on it. */
export const ENDPOINT_TAG = 'endpointId';
const TAG = `\${aws:PrincipalTag/${ENDPOINT_TAG}}`;

export interface WorkerRoleProps {
  stage: string;
  bucket: s3.IBucket;
  resultsQueue: sqs.IQueue;
  /** The credentials handler's role: the only principal that may assume this one. */
  vendedBy: iam.IRole;
}

/**
 * The identity a worker agent works under. The credentials handler assumes it with the endpoint
 * id as a session tag; the policy resolves `${aws:PrincipalTag/endpointId}`, so one role serves
 * every endpoint and each set of credentials reaches only its own queue and S3 prefix.
 */
export class WorkerRole extends Construct {
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: WorkerRoleProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const principal = new iam.ArnPrincipal(props.vendedBy.roleArn)
      .withSessionTags()
      // Credentials without an endpoint tag would match no queue; refuse to issue them at all,
      // and refuse any other tag so a caller cannot smuggle in keys the policy might one day read.
      .withConditions({
        StringLike: { [`aws:RequestTag/${ENDPOINT_TAG}`]: '?*' },
        'ForAllValues:StringEquals': { 'aws:TagKeys': [ENDPOINT_TAG] },
      });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: principal,
      description: `Ferry ${props.stage}: worker agents, scoped per endpoint by the ${ENDPOINT_TAG} session tag`,
      // STS: role chaining caps a session at one hour whatever this says.
      maxSessionDuration: Duration.hours(1),
    });

    const tagged = { StringLike: { [`aws:PrincipalTag/${ENDPOINT_TAG}`]: '?*' } };
    const queueArn = stack.formatArn({
      service: 'sqs',
      resource: `${endpointQueuePrefix(props.stage)}${TAG}`,
      arnFormat: ArnFormat.NO_RESOURCE_NAME,
    });
    // Batch calls (DeleteMessageBatch, ChangeMessageVisibilityBatch) are authorised as their single forms.
    // GetQueueAttributes: an endpoint manager scales its blocks on its own queue's depth.
    this.role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'OwnEndpointQueue',
        actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes'],
        resources: [queueArn],
        conditions: tagged,
      }),
    );
    // One results queue serves all endpoints; the results Lambda accepts a result only for a task
    // of the sender's endpoint and payload refs only under its prefix (core/tasks/results.ts applyResults).
    this.role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'SendResults',
        actions: ['sqs:SendMessage'],
        resources: [props.resultsQueue.queueArn],
        conditions: tagged,
      }),
    );
    const payloadObjects = props.bucket.arnForObjects(`payloads/${TAG}/*`);
    this.role.addToPolicy(
      new iam.PolicyStatement({
        sid: 'OwnPayloadPrefix',
        actions: ['s3:GetObject', 's3:PutObject'],
        resources: [payloadObjects],
        conditions: tagged,
      }),
    );
    acknowledgeWildcard(
      this.role,
      payloadObjects,
      "The prefix is resolved per session by ${aws:PrincipalTag/endpointId} to payloads/<endpointId>/: one endpoint's own objects, created at run time.",
    );
  }
}
