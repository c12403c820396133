import { Duration } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

// SQS: 256 KiB per message, the same ceiling core/ and workers/ assume for task and result messages.
export const MAX_MESSAGE_BYTES = 262_144;
// SQS: the longest retention, 14 days, so a stuck result can still be redriven by hand.
const RETENTION = Duration.days(14);

export interface ResultsQueueProps {
  /** At least six times the consumer Lambda's timeout (AWS's advice for SQS event sources). */
  visibilityTimeout: Duration;
  /** Deliveries before a result message goes to the DLQ. */
  maxReceiveCount: number;
}

/**
 * The results queue and its dead-letter queue, with what every Ferry queue gets by default:
 * SQS-managed encryption, a policy that denies anything but TLS, an explicit message size.
 */
export class ResultsQueue extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: ResultsQueueProps) {
    super(scope, id);
    const common = {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      maxMessageSizeBytes: MAX_MESSAGE_BYTES,
      retentionPeriod: RETENTION,
    };
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', common);
    this.queue = new sqs.Queue(this, 'Queue', {
      ...common,
      visibilityTimeout: props.visibilityTimeout,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceiveCount },
    });
  }
}
