import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { onClientCreated } from '../core/clients';
import {
  METRICS_NAMESPACE,
  SERVICE_NAME,
  setTelemetry,
  TASK_LATENCY_METRIC,
  TASK_METRICS,
  type TaskOutcome,
  type Telemetry,
} from '../core/telemetry';

/**
 * Powertools for every Ferry Lambda, and the one middy stack they all go through (`observed`):
 * - Logger: structured JSON with the Lambda request id, the correlation id (the API Gateway
 *   requestId, the SQS messageId, the EventBridge event id) and a debug sample
 *   (POWERTOOLS_LOGGER_SAMPLE_RATE: that fraction of invocations logs at DEBUG).
 * - Metrics: EMF lines in namespace Ferry with dimensions service and stage, flushed at the end of
 *   each invocation: task counts (core/telemetry.ts TASK_METRICS) twice, per stage (what the
 *   dashboard and alarms use) and per stage and endpoint; TaskLatency per stage only.
 * - Tracer: X-Ray subsegments for the handler and every AWS SDK client core/clients.ts builds.
 *
 * Outside Lambda (the local stack runs these handlers in its own process) tracing is off, since
 * there is no X-Ray daemon, and metrics are off so that `npm start` prints no EMF lines; either
 * is turned on by setting POWERTOOLS_TRACE_ENABLED / POWERTOOLS_METRICS_DISABLED=false explicitly.
 */

const env = process.env;
const inLambda = Boolean(env.AWS_LAMBDA_FUNCTION_NAME);
const metricsOn = inLambda ? env.POWERTOOLS_METRICS_DISABLED !== 'true' : env.POWERTOOLS_METRICS_DISABLED === 'false';

// Lambda's advanced logging controls (AWS_LAMBDA_LOG_LEVEL) would fix the Logger's level and so
// disable debug sampling. infra/lib/ferry-function.ts sets them to DEBUG (Lambda drops nothing)
// and POWERTOOLS_LOG_LEVEL to the level wanted; with that set, the Logger goes by it alone.
if (env.POWERTOOLS_LOG_LEVEL) delete env.AWS_LAMBDA_LOG_LEVEL;

export const logger = new Logger({ serviceName: env.POWERTOOLS_SERVICE_NAME ?? SERVICE_NAME });
const tracingOn = inLambda ? env.POWERTOOLS_TRACE_ENABLED !== 'false' : env.POWERTOOLS_TRACE_ENABLED === 'true';
/**
 * Loaded only where tracing is on: the X-Ray SDK tracks context with an async hook on every
 * promise of the process from the moment it is loaded, which made each `await` of the local
 * stack (handlers and servers in one process) about ten times dearer with tracing off.
 */
export const tracer: Tracer | undefined = tracingOn
  ? new (require('@aws-lambda-powertools/tracer') as typeof import('@aws-lambda-powertools/tracer')).Tracer({
      serviceName: env.POWERTOOLS_SERVICE_NAME ?? SERVICE_NAME,
      enabled: true,
    })
  : undefined;
export const metrics = new Metrics({
  namespace: env.POWERTOOLS_METRICS_NAMESPACE ?? METRICS_NAMESPACE,
  serviceName: env.POWERTOOLS_SERVICE_NAME ?? SERVICE_NAME,
  defaultDimensions: { stage: env.FERRY_STAGE ?? 'local' },
});

// Task counts and latencies of the invocations in flight, published when each ends. In Lambda
// there is one at a time; the local API stand-in runs several at once, and whichever ends first
// publishes what all have counted so far (metrics are off there unless asked for).
const counts = new Map<string, Map<TaskOutcome, number>>();
const latencies: number[] = [];
let inFlight = 0;

const ferryTelemetry: Telemetry = {
  log: (level, message, fields) => logger[level](message, fields ?? {}),
  tasks: (outcome, endpointId, count = 1) => {
    if (!inFlight || !metricsOn || count <= 0) return;
    const byOutcome = counts.get(endpointId) ?? new Map<TaskOutcome, number>();
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + count);
    counts.set(endpointId, byOutcome);
  },
  taskLatency: (ms) => {
    if (inFlight && metricsOn && Number.isFinite(ms) && ms >= 0) latencies.push(ms);
  },
};
setTelemetry(ferryTelemetry);
if (tracer) onClientCreated((client) => tracer.captureAWSv3Client(client));

/**
 * One EMF line per endpoint with its task counts under two dimension sets: [service, stage] (one
 * metric per name and stage, cheap, what alarms watch) and [service, stage, endpoint] (one custom
 * metric per name and endpoint). Then TaskLatency values, up to 100 a line (EMF's limit).
 */
export function publishMetrics(): void {
  for (const [endpoint, byOutcome] of counts) {
    metrics.addDimensions({});
    metrics.addDimensions({ endpoint });
    for (const [outcome, n] of byOutcome) metrics.addMetric(TASK_METRICS[outcome], MetricUnit.Count, n);
    metrics.publishStoredMetrics();
  }
  counts.clear();
  while (latencies.length) {
    for (const ms of latencies.splice(0, 100)) metrics.addMetric(TASK_LATENCY_METRIC, MetricUnit.Milliseconds, ms);
    metrics.publishStoredMetrics();
  }
}

/** The id that ties this invocation's log lines to the caller's request or message. */
export function correlationIdOf(event: unknown): string | undefined {
  const e = event as { requestContext?: { requestId?: string }; Records?: { messageId?: string }[]; id?: string } | undefined;
  if (typeof e?.requestContext?.requestId === 'string') return e.requestContext.requestId;
  // An SQS batch of one: its message; a larger batch's lines carry their own message's id.
  if (Array.isArray(e?.Records)) return e.Records.length === 1 ? e.Records[0]?.messageId : undefined;
  return typeof e?.id === 'string' ? e.id : undefined;
}

let coldStart = true;

const ferryMiddleware = (): middy.MiddlewareObj<unknown, unknown, Error, Context> => {
  const end = () => {
    inFlight = Math.max(0, inFlight - 1);
    if (metricsOn) publishMetrics();
  };
  return {
    before: (request) => {
      inFlight++;
      const id = correlationIdOf(request.event);
      if (id) logger.setCorrelationId(id);
      if (coldStart && metricsOn) metrics.captureColdStartMetric(request.context.functionName);
      coldStart = false;
    },
    after: end,
    onError: end,
  };
};

/**
 * The middy stack every Ferry handler goes through: X-Ray handler subsegment where tracing is on
 * (without the response, which may be megabytes), Lambda context and correlation id on every log line, metrics published
 * at the end whether the handler returned or threw.
 */
export function observed<E, R>(handler: (event: E, context: Context) => Promise<R>): Observed<E, R> {
  const stack = middy<E, R, Error, Context>(handler);
  if (tracer) stack.use(captureLambdaHandler(tracer, { captureResponse: false }));
  return stack
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(ferryMiddleware() as middy.MiddlewareObj<E, R, Error, Context>) as Observed<E, R>;
}

/**
 * A middy handler that may also be called as the local stack calls it: with the event alone, or a
 * partial context (middy fills in `{}`; the Logger and the sweep read only what is there).
 */
export type Observed<E, R> = middy.MiddyfiedHandler<E, R, Error, Context> & ((event: E, context?: Partial<Context>) => Promise<R>);
