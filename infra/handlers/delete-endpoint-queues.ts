/**
 * Custom resource behind `cdk destroy`: the register handler creates endpoint queues at run time,
 * so CloudFormation does not know them and would leave them behind. On Delete this removes every
 * queue named `ferry-<stage>-ep-*` (task queues and DLQs) of the stage; Create and Update do nothing.
 *
 * It answers CloudFormation itself (a PUT to the presigned ResponseURL), so no provider framework
 * (and its extra Lambdas) is needed. Deployed by infra/ only; it imports no Ferry runtime code.
 */
import { DeleteQueueCommand, ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { CloudFormationCustomResourceEvent, Context } from 'aws-lambda';

let sqs: SQSClient | undefined;
const client = () => (sqs ??= new SQSClient({}));

export interface ReaperProperties {
  ServiceToken: string;
  /** Queues whose names start with this are deleted: `ferry-<stage>-ep-`. */
  QueueNamePrefix: string;
}

/** Delete every queue whose name starts with `prefix`; returns the URLs deleted. */
export async function deleteQueuesByPrefix(prefix: string, sqsClient: SQSClient = client()): Promise<string[]> {
  if (!/^ferry-[a-z][a-z0-9-]*-ep-$/.test(prefix)) throw new Error(`refusing to delete queues by the prefix "${prefix}"`);
  const urls: string[] = [];
  let next: string | undefined;
  do {
    // SQS: ListQueues returns at most 1,000 URLs a page.
    const page = await sqsClient.send(new ListQueuesCommand({ QueueNamePrefix: prefix, MaxResults: 1000, NextToken: next }));
    urls.push(...(page.QueueUrls ?? []));
    next = page.NextToken;
  } while (next);
  const failures: string[] = [];
  for (const url of urls) {
    try {
      await sqsClient.send(new DeleteQueueCommand({ QueueUrl: url }));
    } catch (err) {
      if ((err as { name?: string }).name !== 'QueueDoesNotExist') failures.push(`${url}: ${String(err)}`);
    }
  }
  if (failures.length) throw new Error(`could not delete ${failures.length} queue(s): ${failures.slice(0, 3).join('; ')}`);
  return urls;
}

export async function handler(event: CloudFormationCustomResourceEvent, _context?: Context): Promise<void> {
  const props = event.ResourceProperties as unknown as ReaperProperties;
  // Keep the physical id stable across updates: a new id would make CloudFormation delete the old
  // resource, and with it every live endpoint queue.
  const physicalId = event.RequestType === 'Create' ? `endpoint-queues:${props.QueueNamePrefix}` : event.PhysicalResourceId;
  let status: 'SUCCESS' | 'FAILED' = 'SUCCESS';
  let reason = 'nothing to do';
  try {
    if (event.RequestType === 'Delete') {
      const deleted = await deleteQueuesByPrefix(props.QueueNamePrefix);
      reason = `deleted ${deleted.length} endpoint queue(s)`;
    }
  } catch (err) {
    status = 'FAILED';
    reason = `${String(err)}`.slice(0, 1000);
  }
  console.log(JSON.stringify({ level: status === 'SUCCESS' ? 'info' : 'error', requestType: event.RequestType, reason }));
  await respond(event, { Status: status, Reason: reason, PhysicalResourceId: physicalId });
}

async function respond(event: CloudFormationCustomResourceEvent, r: { Status: string; Reason: string; PhysicalResourceId: string }): Promise<void> {
  const body = JSON.stringify({ ...r, StackId: event.StackId, RequestId: event.RequestId, LogicalResourceId: event.LogicalResourceId, Data: {} });
  // The presigned URL was signed without a content type, so none may be sent.
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch(event.ResponseURL, { method: 'PUT', body, headers: { 'content-type': '' } });
      if (res.ok) return;
      throw new Error(`HTTP ${res.status}`);
    } catch (err) {
      if (attempt >= 4) throw err;
      await new Promise((ok) => setTimeout(ok, 500 * 2 ** attempt));
    }
  }
}
