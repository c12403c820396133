/**
 * Custom resource of a throwaway stage's data stack (retainData=false): when the stage's data goes,
 * its endpoint queues go with it. The register handler makes endpoint queues at run time, so
 * CloudFormation does not know them and would leave them behind.
 *
 * Endpoint queues belong to their endpoint records, so on Delete this removes every queue named
 * `ferry-<stage>-ep-*` (task queues and DLQs) only once the endpoints table is gone: the tables
 * depend on this resource, so on stack deletion CloudFormation deletes them first. If the table
 * still exists (the resource was dropped from the template, e.g. by turning retainData on), its
 * records still name their queues and nothing is deleted. Create and Update do nothing.
 *
 * It answers CloudFormation itself (a PUT to the presigned ResponseURL), so no provider framework
 * (and its extra Lambdas) is needed. Deployed by infra/ only; it imports no Ferry runtime code.
 */
import { DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteQueueCommand, ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { CloudFormationCustomResourceEvent, Context } from 'aws-lambda';
import { respond } from './cfn-response';

let sqs: SQSClient | undefined;
let ddb: DynamoDBClient | undefined;

export interface StageQueuesProperties {
  ServiceToken: string;
  /** Queues whose names start with this are deleted: `ferry-<stage>-ep-`. */
  QueueNamePrefix: string;
  /** The endpoints table: while it exists, no queue is deleted. */
  EndpointsTableName: string;
}

/** Delete every queue whose name starts with `prefix`; returns the URLs deleted. */
export async function deleteQueuesByPrefix(prefix: string, sqsClient: SQSClient = (sqs ??= new SQSClient({}))): Promise<string[]> {
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

async function tableExists(name: string): Promise<boolean> {
  try {
    await (ddb ??= new DynamoDBClient({})).send(new DescribeTableCommand({ TableName: name }));
    return true;
  } catch (err) {
    if ((err as { name?: string }).name === 'ResourceNotFoundException') return false;
    throw err;
  }
}

export async function handler(event: CloudFormationCustomResourceEvent, _context?: Context): Promise<void> {
  const props = event.ResourceProperties as unknown as StageQueuesProperties;
  const physicalId = event.RequestType === 'Create' ? `stage-queues:${props.QueueNamePrefix}` : event.PhysicalResourceId;
  let status: 'SUCCESS' | 'FAILED' = 'SUCCESS';
  let reason = 'nothing to do';
  try {
    if (event.RequestType === 'Delete') {
      if (await tableExists(props.EndpointsTableName)) {
        reason = `${props.EndpointsTableName} still exists: its records name their queues, so none is deleted`;
      } else {
        reason = `deleted ${(await deleteQueuesByPrefix(props.QueueNamePrefix)).length} endpoint queue(s)`;
      }
    }
  } catch (err) {
    status = 'FAILED';
    reason = `${String(err)}`.slice(0, 1000);
  }
  console.log(JSON.stringify({ level: status === 'SUCCESS' ? 'info' : 'error', requestType: event.RequestType, reason }));
  await respond(event, { Status: status, Reason: reason, PhysicalResourceId: physicalId });
}
