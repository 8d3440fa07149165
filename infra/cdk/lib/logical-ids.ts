import { CfnElement } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

/**
 * Gives the CloudFormation resource of `construct` the logical id the SAM template gives it
 * (`JobsTable`, `HighBalanceQueue`, …) instead of a path-derived id with a hash. Both templates
 * then name every resource alike, so the names in alarms, outputs and the equivalence test
 * (tests/it/cdk.rs) agree, and a resource keeps its identity when a stack changes hands.
 */
export function keepLogicalId(construct: IConstruct, logicalId: string): void {
  const resource = construct.node.defaultChild;
  if (!(resource instanceof CfnElement)) {
    throw new Error(`${construct.node.path} has no CloudFormation resource to name ${logicalId}`);
  }
  resource.overrideLogicalId(logicalId);
}
