import { CfnResource, Duration, Stack } from 'aws-cdk-lib';
import type * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { FargateEndpointService } from './fargate-endpoints';
import { METRICS_NAMESPACE, SERVICE_NAME, TASK_LATENCY_METRIC, TASK_METRICS, type TaskOutcome } from '../../core/telemetry';
import type { FerryFunction } from './ferry-function';

export interface ObservabilityProps {
  stage: string;
  api: apigwv2.HttpApi;
  functions: Record<string, FerryFunction>;
  resultsQueue: sqs.IQueue;
  resultsDeadLetterQueue: sqs.IQueue;
  fargate: FargateEndpointService[];
  /** Alarms notify this topic when given. */
  alarmTopicArn?: string;
}

const FIVE_MINUTES = Duration.minutes(5);
// API Gateway 5xx over five minutes before paging: a single 500 is logged, a run of them is an incident.
const API_5XX_THRESHOLD = 5;
// Results older than this mean the results Lambda is failing or throttled: clients see tasks stuck "running".
const RESULTS_AGE_SECONDS = 300;
// Lost tasks (every delivery's worker died, or the message expired unread, or its queue is gone)
// over five minutes before paging: one is a user's crashing function, a run of them is an outage.
const TASKS_LOST_THRESHOLD = 5;

/** Dashboard names are per account and region in CloudWatch's console but global in its API: the region keeps two regions' stages apart. */
export const dashboardName = (stage: string, region: string): string => `Ferry-${stage}-${region}`;

/**
 * Alarms (DLQ depth, Lambda errors and throttles, API 5xx, results backlog, lost tasks) and one
 * dashboard, on AWS's metrics and on the task metrics the Lambdas publish (lambdas/observability.ts:
 * namespace Ferry, dimensions service and stage; per endpoint too, searched for on the dashboard).
 */
export class Observability extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const topic = props.alarmTopicArn ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn) : undefined;
    const alarm = (alarmId: string, metric: cloudwatch.IMetric, threshold: number, description: string) => {
      const a = new cloudwatch.Alarm(this, alarmId, {
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: `Ferry ${props.stage}: ${description}`,
      });
      if (topic) a.addAlarmAction(new actions.SnsAction(topic));
      this.alarms.push(a);
      return a;
    };

    alarm(
      'ResultsDeadLetters',
      props.resultsDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: FIVE_MINUTES, statistic: 'Maximum' }),
      1,
      'result messages reached the results DLQ; their tasks stay unfinished until redriven',
    );
    alarm(
      'ResultsBacklogAge',
      props.resultsQueue.metricApproximateAgeOfOldestMessage({ period: FIVE_MINUTES, statistic: 'Maximum' }),
      RESULTS_AGE_SECONDS,
      'results wait more than five minutes to be applied',
    );
    alarm('Api5xx', props.api.metricServerError({ period: FIVE_MINUTES, statistic: 'Sum' }), API_5XX_THRESHOLD, 'the API answered 5xx');
    const tasks = (outcome: TaskOutcome, label?: string) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: TASK_METRICS[outcome],
        dimensionsMap: { service: SERVICE_NAME, stage: props.stage },
        statistic: 'Sum',
        period: FIVE_MINUTES,
        // An alarm on a metric with a label becomes a metric-math alarm; only the graphs need one.
        label,
      });
    const latency = (statistic: string) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: TASK_LATENCY_METRIC,
        dimensionsMap: { service: SERVICE_NAME, stage: props.stage },
        statistic,
        period: FIVE_MINUTES,
        label: `submit to final ${statistic} (ms)`,
      });
    alarm(
      'TasksLost',
      tasks('lost'),
      TASKS_LOST_THRESHOLD,
      'tasks were lost (workers died on every delivery, messages expired unread, or endpoint queues are gone); see the per-endpoint TasksLost graph',
    );
    for (const [name, fn] of Object.entries(props.functions)) {
      alarm(`${name}Errors`, fn.metricErrors({ period: FIVE_MINUTES, statistic: 'Sum' }), 1, `${name} Lambda errors`);
      alarm(`${name}Throttles`, fn.metricThrottles({ period: FIVE_MINUTES, statistic: 'Sum' }), 1, `${name} Lambda throttled`);
    }

    const fns = Object.entries(props.functions);
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: dashboardName(props.stage, Stack.of(this).region),
      defaultInterval: Duration.hours(3),
    });
    // CloudFormation takes Tags on AWS::CloudWatch::Dashboard (aws-cdk-lib's spec has them); the
    // resource schemas cfn-lint ships (1.51) predate that property and call it E3002.
    (this.dashboard.node.defaultChild as CfnResource).addMetadata('cfn-lint', { config: { ignore_checks: ['E3002'] } });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'API requests',
        left: [props.api.metricCount({ statistic: 'Sum' })],
        right: [props.api.metricClientError(), props.api.metricServerError()],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'API latency p50 / p99',
        left: [props.api.metricLatency({ statistic: 'p50' }), props.api.metricLatency({ statistic: 'p99' })],
        width: 8,
      }),
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 8 }),
    );
    const perEndpoint = (outcome: TaskOutcome) =>
      new cloudwatch.MathExpression({
        expression: `SEARCH('{${METRICS_NAMESPACE},service,stage,endpoint} MetricName="${TASK_METRICS[outcome]}" stage="${props.stage}"', 'Sum', 300)`,
        usingMetrics: {},
        label: '',
        period: FIVE_MINUTES,
      });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Tasks (all endpoints)',
        left: (['submitted', 'started', 'succeeded', 'failed', 'cancelled', 'lost'] as const).map((o) => tasks(o, o)),
        width: 8,
      }),
      new cloudwatch.GraphWidget({ title: 'Task submit-to-final latency', left: ['p50', 'p90', 'p99'].map(latency), width: 8 }),
      new cloudwatch.GraphWidget({
        title: 'Tasks lost and failed, per endpoint',
        left: [perEndpoint('lost')],
        right: [perEndpoint('failed')],
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Lambda errors',
        left: fns.map(([n, f]) => f.metricErrors({ label: n, statistic: 'Sum' })),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Lambda duration p99',
        left: fns.map(([n, f]) => f.metricDuration({ label: n, statistic: 'p99' })),
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Lambda throttles',
        left: fns.map(([n, f]) => f.metricThrottles({ label: n, statistic: 'Sum' })),
        width: 8,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Results queue',
        left: [
          props.resultsQueue.metricApproximateNumberOfMessagesVisible({ label: 'waiting' }),
          props.resultsDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ label: 'dead letters' }),
        ],
        right: [props.resultsQueue.metricApproximateAgeOfOldestMessage({ label: 'oldest (s)' })],
        width: 12,
      }),
      ...props.fargate.map(
        (f) =>
          new cloudwatch.GraphWidget({
            title: `Fargate endpoint ${f.spec.name}`,
            left: [f.backlog],
            right: [
              new cloudwatch.Metric({
                namespace: 'ECS/ContainerInsights',
                metricName: 'RunningTaskCount',
                dimensionsMap: { ClusterName: f.service.cluster.clusterName, ServiceName: f.service.serviceName },
                statistic: 'Maximum',
                label: 'running tasks',
              }),
            ],
            width: 12,
          }),
      ),
    );
  }
}
