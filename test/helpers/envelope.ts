import { inlineEnvelope, type Envelope } from '../../core/payload';

/** A JSON value as a worker reports it: an inline envelope of the json codec. */
export const jsonEnvelope = (value: unknown): Envelope => inlineEnvelope(Buffer.from(JSON.stringify(value)), 'json');
