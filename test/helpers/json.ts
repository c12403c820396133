/**
 * JSON a test reads field by field: an API answer or a synthesized CloudFormation template.
 * Its fields are checked by the assertions that read them (a wrong field fails the test), so
 * it is typed loosely on purpose; this is the one `any` in the code base.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- read by assertions, see above
export type Json = any;

/** A resource of a synthesized template. */
export interface CfnResource {
  Type: string;
  Properties: Record<string, Json>;
  DependsOn?: string[];
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
}
