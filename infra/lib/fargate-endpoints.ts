import { Arn, ArnFormat, Duration, IgnoreMode, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { ECR_IMAGE, endpointQueueName, type FargateEndpointSpec } from './context';
import { REPO_ROOT } from './ferry-function';

export interface FargateEndpointsProps {
  stage: string;
  endpoints: FargateEndpointSpec[];
  /** The API the agents trade their endpoint secret at (no trailing slash). */
  apiUrl: string;
  logRetention: logs.RetentionDays;
}

/** One endpoint's service and the metric it scales on, for the dashboard and alarms. */
export interface FargateEndpointService {
  spec: FargateEndpointSpec;
  service: ecs.FargateService;
  backlog: cloudwatch.IMetric;
}

// The Docker build context is the repository root (workers/Dockerfile copies package*.json,
// tsconfig.json, core/ and workers/); everything else stays out of the staged asset.
const BUILD_CONTEXT_EXCLUDE = ['*', '!package.json', '!package-lock.json', '!tsconfig.json', '!core', '!workers'];
// Fargate: SIGTERM, then SIGKILL after at most 120 s (the Fargate maximum); the agent drains
// running tasks in that window. Tasks with longer walltimes are kept safe by task scale-in
// protection instead: a task that holds work is never chosen by scale-in or a deployment
// (workers/ecs-protection.ts), so SIGTERM reaches a busy agent only when ECS must stop it anyway.
export const STOP_TIMEOUT = Duration.seconds(120);
// The agent drains for a little less than the stop timeout, so it can hand back what it
// cannot finish and say goodbye before SIGKILL.
const AGENT_GRACE_MS = STOP_TIMEOUT.toMilliseconds() - 15_000;
// Application Auto Scaling: at most 40 step adjustments per policy; 20 levels keep the steps readable.
const MAX_LEVELS = 20;

/**
 * Fargate endpoints listed in context: for each, an ECS service running the agent image built
 * from workers/Dockerfile, with the endpoint secret injected from Secrets Manager. The service
 * scales on the endpoint queue's backlog (queued plus in flight), in steps of `backlogPerTask`
 * per task, up to `maxTasks`, and down to zero when the queue is empty and nothing runs.
 */
export class FargateEndpoints extends Construct {
  readonly services: FargateEndpointService[] = [];
  readonly cluster: ecs.Cluster;

  constructor(scope: Construct, id: string, props: FargateEndpointsProps) {
    super(scope, id);
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', { retention: props.logRetention, removalPolicy: RemovalPolicy.DESTROY });
    // Public subnets and public IPs, no NAT gateway: the agent only calls out (API, SQS, S3), nothing calls in.
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
      flowLogs: {
        rejected: { trafficType: ec2.FlowLogTrafficType.REJECT, destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs) },
      },
    });
    this.cluster = new ecs.Cluster(this, 'Cluster', { vpc, containerInsightsV2: ecs.ContainerInsights.ENABLED });
    // No inbound at all. Outbound stays open: besides the API, SQS and S3, the functions users
    // submit may fetch their own data from anywhere, as they could on an on-prem worker.
    const securityGroup = new ec2.SecurityGroup(this, 'AgentSecurityGroup', {
      vpc,
      description: 'Ferry worker agents: no inbound; outbound for the Ferry API, SQS, S3 and user functions',
      allowAllOutbound: true,
    });

    const images = new Map<string, ecs.ContainerImage>();
    const imageFor = (spec: FargateEndpointSpec) => (spec.workerImage ? prebuilt(spec.workerImage) : built(spec.architecture));
    // A prebuilt image (workerImage): no Docker at deploy. A private ECR image gets pull rights on
    // its repository only; any other registry is pulled as a public image.
    const prebuilt = (uri: string) => {
      if (!images.has(uri)) {
        const ecrImage = ECR_IMAGE.exec(uri);
        if (ecrImage) {
          const [, account, region, name, tag, digest] = ecrImage;
          const repositoryArn = Arn.format({
            partition: Stack.of(this).partition,
            service: 'ecr',
            account,
            region,
            resource: 'repository',
            resourceName: name,
            arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
          });
          const repository = ecr.Repository.fromRepositoryAttributes(this, `WorkerImageRepo${images.size}`, {
            repositoryArn,
            repositoryName: name!,
          });
          images.set(uri, new PrebuiltEcrImage(repository, uri, tag ?? digest!));
        } else {
          images.set(uri, ecs.ContainerImage.fromRegistry(uri));
        }
      }
      return images.get(uri)!;
    };
    const built = (arch: FargateEndpointSpec['architecture']) => {
      if (!images.has(arch)) {
        const asset = new ecrAssets.DockerImageAsset(this, arch === 'arm64' ? 'AgentImageArm64' : 'AgentImageX86', {
          directory: REPO_ROOT,
          file: 'workers/Dockerfile',
          platform: arch === 'arm64' ? ecrAssets.Platform.LINUX_ARM64 : ecrAssets.Platform.LINUX_AMD64,
          exclude: BUILD_CONTEXT_EXCLUDE,
          ignoreMode: IgnoreMode.DOCKER,
        });
        images.set(arch, ecs.ContainerImage.fromDockerImageAsset(asset));
      }
      return images.get(arch)!;
    };

    for (const spec of props.endpoints) {
      const scope = new Construct(this, `Endpoint-${spec.name}`);
      const taskDefinition = new ecs.FargateTaskDefinition(scope, 'Task', {
        cpu: spec.cpu,
        memoryLimitMiB: spec.memory,
        runtimePlatform: {
          cpuArchitecture: spec.architecture === 'arm64' ? ecs.CpuArchitecture.ARM64 : ecs.CpuArchitecture.X86_64,
          operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        },
      });
      // A full ARN ends in a six-character suffix; a partial one (the name only) is matched with a wildcard.
      const secret = /-[A-Za-z0-9]{6}$/.test(spec.secretArn)
        ? secretsmanager.Secret.fromSecretCompleteArn(scope, 'EndpointSecret', spec.secretArn)
        : secretsmanager.Secret.fromSecretPartialArn(scope, 'EndpointSecret', spec.secretArn);
      const environment: Record<string, string> = {
        FERRY_API_URL: props.apiUrl,
        FERRY_ENDPOINT_ID: spec.endpointId,
        FERRY_GRACE_MS: String(AGENT_GRACE_MS),
      };
      if (spec.poolSize !== undefined) environment.FERRY_POOL_SIZE = String(spec.poolSize);
      taskDefinition.addContainer('agent', {
        image: imageFor(spec),
        environment,
        secrets: { FERRY_ENDPOINT_SECRET: ecs.Secret.fromSecretsManager(secret, spec.secretJsonField) },
        logging: ecs.LogDrivers.awsLogs({
          streamPrefix: spec.name,
          logGroup: new logs.LogGroup(scope, 'Logs', { retention: props.logRetention, removalPolicy: RemovalPolicy.DESTROY }),
        }),
        stopTimeout: STOP_TIMEOUT,
      });
      // The agent needs no AWS rights of its own for its work: it trades the endpoint secret for
      // vended, endpoint-scoped credentials (the worker role), exactly as an on-prem agent does.
      // Its one right: scale-in protection for tasks of this cluster. The ECS container agent
      // calls ecs:UpdateTaskProtection with the task role when the agent PUTs to $ECS_AGENT_URI.
      taskDefinition.taskRole.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['ecs:UpdateTaskProtection'],
          resources: [
            Stack.of(this).formatArn({
              service: 'ecs',
              resource: 'task',
              resourceName: `${this.cluster.clusterName}/*`,
              arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
            }),
          ],
        }),
      );

      const service = new ecs.FargateService(scope, 'Service', {
        cluster: this.cluster,
        taskDefinition,
        // No desiredCount: the task count belongs to Application Auto Scaling alone, so a deploy
        // (a new agent image) never resets running endpoints. ECS starts a new service with one
        // task (which proves the image and the secret: the circuit breaker fails the first deploy
        // if the agent cannot start); the backlog alarm takes it to zero once the queue reads empty.
        minHealthyPercent: 100,
        maxHealthyPercent: 200,
        assignPublicIp: true,
        vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
        securityGroups: [securityGroup],
        circuitBreaker: { enable: true, rollback: true },
      });

      const queueName = endpointQueueName(props.stage, spec.endpointId);
      const sqsMetric = (metricName: string) =>
        new cloudwatch.Metric({
          namespace: 'AWS/SQS',
          metricName,
          dimensionsMap: { QueueName: queueName },
          statistic: 'Maximum',
          period: Duration.minutes(1),
        });
      // Queued plus in flight: a running task's message stays in flight, so a busy queue never reads as idle.
      const backlog = new cloudwatch.MathExpression({
        expression: 'visible + inFlight',
        usingMetrics: {
          visible: sqsMetric('ApproximateNumberOfMessagesVisible'),
          inFlight: sqsMetric('ApproximateNumberOfMessagesNotVisible'),
        },
        label: `${spec.name} backlog (queued + running)`,
        period: Duration.minutes(1),
      });
      const scaling = service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: spec.maxTasks });
      scaling.scaleOnMetric('ScaleOnBacklog', {
        metric: backlog,
        adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
        scalingSteps: backlogSteps(spec.backlogPerTask, spec.maxTasks),
        metricAggregationType: appscaling.MetricAggregationType.MAXIMUM,
        cooldown: Duration.minutes(1),
        evaluationPeriods: 1,
      });
      this.services.push({ spec, service, backlog });

      Validations.of(taskDefinition).acknowledge({
        id: 'AwsSolutions-ECS2',
        reason:
          'Only the API URL, endpoint id, drain period and pool size are plain environment variables; the endpoint secret comes from Secrets Manager.',
      });
      Validations.of(taskDefinition).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/<${Stack.of(this).getLogicalId(this.cluster.node.defaultChild as ecs.CfnCluster)}>/*]`,
        reason:
          'ecs:UpdateTaskProtection on tasks of this cluster only: task ids are assigned at run time, and the ECS agent only ever asks for the calling task.',
      });
      Validations.of(taskDefinition).acknowledge({
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'Only ecr:GetAuthorizationToken in the execution role, which has no resource-level permissions; image pulls are limited to the CDK assets repository.',
      });
    }
  }
}

/**
 * A prebuilt image in ECR: the execution role may pull from that repository only, and the
 * task definition names the image exactly as given (the tag or digest is kept).
 */
class PrebuiltEcrImage extends ecs.ContainerImage {
  constructor(
    private readonly repository: ecr.IRepository,
    private readonly uri: string,
    readonly tagOrDigest: string,
  ) {
    super();
  }

  bind(_scope: Construct, containerDefinition: ecs.ContainerDefinition): ecs.ContainerImageConfig {
    this.repository.grantPull(containerDefinition.taskDefinition.obtainExecutionRole());
    return { imageName: this.uri };
  }
}

/**
 * Exact task counts by backlog: 0 when the queue is empty and nothing runs, else
 * ceil(backlog / backlogPerTask) capped at maxTasks (in at most MAX_LEVELS steps). The gap
 * between 0 and 1 splits the steps into a scale-to-zero alarm and a scale-out alarm.
 */
export function backlogSteps(backlogPerTask: number, maxTasks: number): appscaling.ScalingInterval[] {
  const levels = [
    ...new Set(
      Array.from({ length: Math.min(maxTasks, MAX_LEVELS) }, (_, i) => Math.ceil(((i + 1) * maxTasks) / Math.min(maxTasks, MAX_LEVELS))),
    ),
  ];
  const steps: appscaling.ScalingInterval[] = [{ upper: 0, change: 0 }];
  let previous = 0;
  for (const [i, tasks] of levels.entries()) {
    const lower = previous * backlogPerTask + 1;
    steps.push(i === levels.length - 1 ? { lower, change: tasks } : { lower, upper: tasks * backlogPerTask + 1, change: tasks });
    previous = tasks;
  }
  return steps;
}
