/**
 * The retired handler of `Custom::FerryEndpointQueues` (logical id EndpointQueues). It used to
 * delete every `ferry-<stage>-ep-*` queue on stack deletion, which broke every endpoint whose
 * record lives on in the data stack. The resource stays in the template, retained (see
 * infra/lib/service-stack.ts), so that stages deployed with the old handler never receive that
 * Delete; this handler answers CloudFormation SUCCESS for every request and touches no queue.
 * Its role holds no SQS rights at all.
 *
 * It answers CloudFormation itself (a PUT to the presigned ResponseURL), so no provider framework
 * (and its extra Lambdas) is needed. Deployed by infra/ only; it imports no Ferry runtime code.
 */
import type { CloudFormationCustomResourceEvent, Context } from 'aws-lambda';
import { respond } from './cfn-response';

export interface RetiredProperties {
  ServiceToken: string;
  QueueNamePrefix: string;
}

export async function handler(event: CloudFormationCustomResourceEvent, _context?: Context): Promise<void> {
  const props = event.ResourceProperties as unknown as RetiredProperties;
  // The physical id stays what the old handler gave it, so an update never replaces the resource.
  const physicalId = event.RequestType === 'Create' ? `endpoint-queues:${props.QueueNamePrefix}` : event.PhysicalResourceId;
  const reason = 'endpoint queues belong to their endpoints: nothing to do';
  console.log(JSON.stringify({ level: 'info', requestType: event.RequestType, reason }));
  await respond(event, { Status: 'SUCCESS', Reason: reason, PhysicalResourceId: physicalId });
}
