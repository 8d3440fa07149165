#!/usr/bin/env node
// The CDK app of the Financial Segments service: one stack, the same as infra/template.yaml.
//
//   infra/build.sh                      # the functions' bootstrap binaries, in target/lambda
//   npx cdk deploy --parameters Stage=prod --parameters ShardCount=64
//
// Context values (-c name=value): stackName (default financial-segments-dev, as infra/samconfig.toml)
// and lambdaDir, the directory holding <function>/bootstrap (default: the workspace's target/lambda,
// or $CARGO_TARGET_DIR/lambda as infra/build.sh writes it).
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { FinancialSegmentsStack } from '../lib/stack';

const app = new App();
const workspace = path.resolve(__dirname, '..', '..', '..');
const targetDirectory = process.env.CARGO_TARGET_DIR
  ? path.resolve(workspace, process.env.CARGO_TARGET_DIR)
  : path.join(workspace, 'target');
const codeDirectory: string = app.node.tryGetContext('lambdaDir') ?? path.join(targetDirectory, 'lambda');
const stackName: string = app.node.tryGetContext('stackName') ?? 'financial-segments-dev';

new FinancialSegmentsStack(app, 'FinancialSegments', {
  stackName,
  description:
    'Financial Segments: segments all users of a mandator by their account data, asynchronously (CDK app, infra/cdk).',
  codeDirectory,
});
