import type { CloudFormationCustomResourceEvent } from 'aws-lambda';

/** Answers CloudFormation's custom-resource request at its presigned URL, retrying a few times. */
export async function respond(
  event: CloudFormationCustomResourceEvent,
  r: { Status: string; Reason: string; PhysicalResourceId: string },
): Promise<void> {
  const body = JSON.stringify({
    ...r,
    StackId: event.StackId,
    RequestId: event.RequestId,
    LogicalResourceId: event.LogicalResourceId,
    Data: {},
  });
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
