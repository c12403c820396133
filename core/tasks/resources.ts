import { BadRequest } from '../errors';
import { resourceSpecificationSchema, type ResourceSpecification } from '../messages';
import { RUNTIME_CODECS } from '../runtimes';
import type { FunctionRecord } from '../tables/functions';
import type { SubmitTaskInput } from './submit';

/**
 * Check one task against its function before anything is written: the argument codec its runtime
 * reads, and the resource specification, which mpi functions need and no other function takes.
 * Returns the mpi task's full resource specification.
 */
export function taskResources(t: SubmitTaskInput, fn: FunctionRecord, i: number): ResourceSpecification | undefined {
  const codecs = RUNTIME_CODECS[fn.runtime];
  if (t.payload && !codecs.includes(t.payload.codec)) {
    throw new BadRequest(`tasks.${i}: a ${fn.runtime} function reads ${codecs.join(' or ')} arguments, not ${t.payload.codec}`);
  }
  if (fn.runtime !== 'mpi') {
    if (t.resource_specification)
      throw new BadRequest(`tasks.${i}.resource_specification: resource_specification applies to mpi functions, not ${fn.runtime}`);
    return undefined;
  }
  if (!t.resource_specification) {
    throw new BadRequest(
      `tasks.${i}.resource_specification: an mpi function needs a resource_specification ({num_nodes?, ranks_per_node?, num_ranks?})`,
    );
  }
  try {
    return resourceSpecification(t.resource_specification);
  } catch (err) {
    if (err instanceof BadRequest) throw new BadRequest(`tasks.${i}.resource_specification: ${err.message}`);
    throw err;
  }
}

/**
 * An MPI task's ranks with the gaps filled as Globus Compute's MPIFunction reads them: one node
 * unless told; ranks per node enough to hold num_ranks (else 1); num_ranks every slot of every node.
 * Throws when num_ranks does not fit num_nodes × ranks_per_node, or a filled-in value is out of range.
 */
export function resourceSpecification(given: Partial<ResourceSpecification>): ResourceSpecification {
  const num_nodes = given.num_nodes ?? 1;
  const ranks_per_node = given.ranks_per_node ?? (given.num_ranks !== undefined ? Math.ceil(given.num_ranks / num_nodes) : 1);
  const num_ranks = given.num_ranks ?? num_nodes * ranks_per_node;
  if (num_ranks > num_nodes * ranks_per_node) {
    throw new BadRequest(`num_ranks ${num_ranks} does not fit ${num_nodes} node(s) × ${ranks_per_node} ranks_per_node`);
  }
  const parsed = resourceSpecificationSchema.safeParse({ num_nodes, ranks_per_node, num_ranks });
  if (!parsed.success) throw new BadRequest(parsed.error.issues.map((x) => `${x.path.join('.')}: ${x.message}`).join('; '));
  return parsed.data;
}
