import { usableEndpoint } from '../../core/access';
import { presignPut, uploadKey } from '../../core/bucket';
import { newId } from '../../core/ids';
import { apiHandler, route } from '../http';
import { createPayloadBody } from '../schemas';

export const handler = apiHandler({
  /** A presigned PUT for one large argument payload; the returned ref goes in a submit's `payload`. */
  'POST /v1/payloads': route({ auth: 'user', body: createPayloadBody }, async ({ caller, body }) => {
    await usableEndpoint(body.endpoint_id, caller.userId);
    const ref = uploadKey(body.endpoint_id, caller.userId, newId());
    const { url, expiresAt } = await presignPut(ref);
    return {
      status: 201,
      body: { ref, url, expires_at: expiresAt.toISOString(), codec: body.codec, size: body.size, sha256: body.sha256 },
    };
  }),
});
