import type { z } from 'zod';
import { resourceSpecificationSchema, shellOptionsSchema, type ResourceSpecification, type ShellOptions } from '../../core/messages';
import { envelopeSchema, type Envelope } from '../../core/payload';

/**
 * The types the SDK shares with the server are plain interfaces, so its bundled declarations need
 * no zod. Each schema must still give exactly its interface: a field added to one and not the
 * other fails the typecheck here (`npm test` runs tsc over the tests).
 */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same: [
  Same<z.infer<typeof shellOptionsSchema>, ShellOptions>,
  Same<z.infer<typeof resourceSpecificationSchema>, ResourceSpecification>,
  Same<z.infer<typeof envelopeSchema>, Envelope>,
] = [true, true, true];

test('each shared schema accepts what its interface describes and refuses what it does not', () => {
  expect(same).toEqual([true, true, true]);
  const shell: ShellOptions = { walltime_ms: 1000, stdout: 'out.txt' };
  expect(shellOptionsSchema.parse(shell)).toEqual(shell);
  expect(shellOptionsSchema.safeParse({ ...shell, extra: 1 }).success).toBe(false);
  const ranks: ResourceSpecification = { num_nodes: 1, ranks_per_node: 2, num_ranks: 2 };
  expect(resourceSpecificationSchema.parse(ranks)).toEqual(ranks);
  const env: Envelope = { v: 1, codec: 'json', size: 2, sha256: 'a'.repeat(64), inline: 'e30=' };
  expect(envelopeSchema.parse(env)).toEqual(env);
  expect(envelopeSchema.safeParse({ ...env, ref: 'k' }).success).toBe(false);
});
