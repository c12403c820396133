#!/usr/bin/env node
/**
 * The Ferry CDK app (`cdk.json`: `npx tsx infra/bin/ferry.ts`). Choose the stage and options with
 * context: `npx cdk deploy --all -c stage=prod`. See README.md, "Deploy to AWS".
 */
import { App } from 'aws-cdk-lib';
import { addNagChecks, buildFerry } from '../lib/app';

const app = new App();
buildFerry(app);
addNagChecks(app);
app.synth();
