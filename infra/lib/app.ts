import { Tags, Validations, type App } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { readContext, type FerryContext } from './context';
import { DataStack } from './data-stack';
import { ServiceStack } from './service-stack';

export interface FerryApp {
  ferry: FerryContext;
  data: DataStack;
  service: ServiceStack;
}

/**
 * Ferry's two stacks for the stage in context. Environment-agnostic: the account and region
 * are the CLI's (profile or AWS_REGION), so one synthesis deploys anywhere.
 */
export function buildFerry(app: App): FerryApp {
  const ferry = readContext(app.node);
  const prefix = `Ferry-${ferry.stage}`;
  const data = new DataStack(app, `${prefix}-Data`, {
    ferry,
    description: `Ferry ${ferry.stage}: tables and payload bucket (stateful)`,
  });
  const service = new ServiceStack(app, `${prefix}-Service`, {
    ferry,
    data,
    description: `Ferry ${ferry.stage}: API, Lambdas, queues, worker role, Fargate endpoints (stateless)`,
  });
  // No cross-stack reference ties them (see DataStack), so the order is stated here.
  service.addStackDependency(data);
  for (const stack of [data, service]) {
    Tags.of(stack).add('ferry:stage', ferry.stage);
    Tags.of(stack).add('ferry:app', 'ferry');
  }
  return { ferry, data, service };
}

/** cdk-nag's AwsSolutions pack runs at every synthesis; an unacknowledged finding fails it. */
export function addNagChecks(app: App): AwsSolutionsChecks {
  const checks = new AwsSolutionsChecks(app);
  Validations.of(app).addPlugins(checks);
  return checks;
}
