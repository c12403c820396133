import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { PolicyViolation } from 'aws-cdk-lib';
import { buildFerry, type FerryApp } from '../../infra/lib/app';
import cdkJson from '../../cdk.json';

/** A Fargate endpoint in context, so the Fargate construct is synthesized and checked too. */
export const FARGATE_ENDPOINT = {
  name: 'cpu',
  endpointId: '0b6c7a2e-9f1d-4c3b-8a5e-2d4f6a8b0c1e',
  secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:ferry/cpu-endpoint-AbCdEf',
  cpu: 1024,
  memory: 2048,
  maxTasks: 4,
};

export interface Synthesized extends FerryApp {
  app: App;
  dataTemplate: Template;
  serviceTemplate: Template;
  /** cdk-nag AwsSolutions findings left after every acknowledgement in code. */
  nagViolations: PolicyViolation[];
  cleanup(): void;
}

/**
 * The app as `cdk synth` builds it (cdk.json context, real esbuild bundling, the Docker asset
 * staged but not built), plus a Fargate endpoint, then cdk-nag over the finished tree.
 */
export function synthesize(context: Record<string, unknown> = {}): Synthesized {
  const outdir = mkdtempSync(join(tmpdir(), 'ferry-cdk-'));
  const app = new App({ outdir, context: { ...cdkJson.context, fargateEndpoints: [FARGATE_ENDPOINT], ...context } });
  const built = buildFerry(app);
  app.synth();
  const nag = new AwsSolutionsChecks().validateScope(app);
  return {
    ...built,
    app,
    dataTemplate: Template.fromStack(built.data),
    serviceTemplate: Template.fromStack(built.service),
    nagViolations: nag.violations,
    cleanup: () => rmSync(outdir, { recursive: true, force: true }),
  };
}

/** A template with content hashes (Lambda bundles, the agent image) replaced, for snapshots. */
export function normalised(template: Template): unknown {
  return JSON.parse(JSON.stringify(template.toJSON()).replace(/[0-9a-f]{64}/g, '<asset-hash>'));
}
