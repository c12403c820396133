/**
 * Typed errors of the domain. Each carries the one HTTP status it maps to, so handlers
 * never decide statuses themselves (see lambdas/http.ts).
 */
export class FerryError extends Error {
  readonly status: number = 500;
  readonly code: string = 'InternalError';
  /** Extra fields a client may act on, returned beside code and message. */
  readonly details?: Record<string, unknown>;

  constructor(message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.details = details;
  }
}

export class BadRequest extends FerryError {
  override readonly status = 400;
  override readonly code: string = 'BadRequest';
}
export class MalformedJson extends BadRequest {
  override readonly code = 'MalformedJson';
}
export class ValidationFailed extends BadRequest {
  override readonly code = 'ValidationFailed';
}
export class Unauthorized extends FerryError {
  override readonly status = 401;
  override readonly code = 'Unauthorized';
}
/**
 * An endpoint secret whose endpoint was deleted (the authorizer's cached answer still admits it
 * for up to 30 s): 401, what the API says once that answer lapses, so a worker agent stops at
 * once as "secret refused" (workers/agent/, workers/grant.ts).
 */
export class EndpointGone extends Unauthorized {
  constructor(endpointId: string) {
    super(`endpoint ${endpointId} was deleted; its secret is no longer valid`);
  }
}
export class Forbidden extends FerryError {
  override readonly status = 403;
  override readonly code: string = 'Forbidden';
}
/** A submit names a function the endpoint's allowed_functions does not list; `details.function_ids` names them. */
export class FunctionNotAllowed extends Forbidden {
  override readonly code = 'FunctionNotAllowed';
}
export class NotFound extends FerryError {
  override readonly status = 404;
  override readonly code = 'NotFound';
}
export class Conflict extends FerryError {
  override readonly status = 409;
  override readonly code: string = 'Conflict';
}
export class IdempotencyKeyReused extends Conflict {
  override readonly code = 'IdempotencyKeyReused';
}
export class PayloadTooLarge extends FerryError {
  override readonly status = 413;
  override readonly code = 'PayloadTooLarge';
}
export class Throttled extends FerryError {
  override readonly status = 429;
  override readonly code = 'Throttled';
}
/** Some tasks of a batch could not be queued; `details.not_queued` names them. */
export class PartialSubmitFailure extends FerryError {
  override readonly status = 503;
  override readonly code = 'PartialSubmitFailure';
}
/** Stored bytes do not match the checksum in their envelope. */
export class ChecksumMismatch extends FerryError {
  override readonly status = 502;
  override readonly code = 'ChecksumMismatch';
}

/** A worker's message points at a payload outside its own endpoint's prefix; it is never applied. */
export class ForeignPayload extends FerryError {
  override readonly status = 403;
  override readonly code = 'ForeignPayload';
}

/** A worker's report about a task its sender may not report on (another endpoint's task, or a body naming another endpoint); never applied. */
export class ForgedReport extends FerryError {
  override readonly status = 403;
  override readonly code = 'ForgedReport';
}

/** The same Idempotency-Key is being served by a request still in flight; retry shortly. */
export class RequestInProgress extends Conflict {
  override readonly code = 'RequestInProgress';
}
