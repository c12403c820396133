/**
 * The Globus Compute tutorial, in Ferry. Run against the local stack with `npm start` in one
 * terminal and `npm run tutorial` in another; FERRY_ENDPOINT_ID picks another endpoint.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Client, Executor, RemoteError } from '../sdk';

const tutorialEndpoint =
  process.env.FERRY_ENDPOINT_ID ||
  (existsSync('.ferry/endpoint.json') ? JSON.parse(readFileSync('.ferry/endpoint.json', 'utf8')).endpoint_id : undefined);
if (!tutorialEndpoint) throw new Error('set FERRY_ENDPOINT_ID, or run `npm start` first');

// Functions travel as source: everything they use is inside their body.
function helloWorld() {
  return 'Hello World!';
}

function divideByZero() {
  const n = 42;
  const d = 0;
  if (d === 0) throw new RangeError('division by zero');
  return n / d;
}

function getSum(a: number, b: number) {
  return a + b;
}

async function getDate() {
  // Imports happen inside the body, on the worker.
  const { format } = await import('node:util');
  return format('%s', new Date().toISOString());
}

async function echo(name: string) {
  const { execSync } = await import('node:child_process');
  const { hostname } = await import('node:os');
  // Non-login shells often leave HOSTNAME unset.
  return execSync(`echo Hello ${name} from $HOSTNAME`, {
    env: { ...process.env, HOSTNAME: process.env.HOSTNAME ?? hostname() },
  }).toString();
}

function pi(numPoints: number) {
  let inside = 0;
  for (let i = 0; i < numPoints; i++) {
    const x = Math.random();
    const y = Math.random();
    if (x * x + y * y < 1) inside++;
  }
  return (inside * 4) / numPoints;
}

async function main() {
  const gce = new Executor({ endpointId: tutorialEndpoint });

  // Hello world: submit returns a future at once.
  const future = gce.submit(helloWorld);
  console.log('Submit returned:', future.constructor.name);
  console.log('Is the future done?', future.done());
  console.log('Result:', await future.result());
  console.log('Is the future done now?', future.done());

  // Exceptions raised remotely come back as RemoteError, with the worker's traceback.
  try {
    await gce.submit(divideByZero).result();
  } catch (err) {
    if (!(err instanceof RemoteError)) throw err;
    console.log(`Remote exception: ${err.remoteType}: ${err.message}`);
    console.log('Remote traceback starts:', err.remoteTraceback.split('\n')[0]);
  }

  // Arguments.
  console.log('getSum(40, 2) =', await gce.submit(getSum, 40, 2));

  // A function that imports a module inside its body.
  const date = await gce.submit(getDate);
  console.log('Date on the endpoint:', date.slice(0, 10));

  // A function that runs an external program.
  console.log('Echo:', (await gce.submit(echo, 'World')).trim());

  // Many submissions at once: Monte Carlo pi.
  const estimates = await Promise.all([1, 2, 3].map(() => gce.submit(pi, 10 ** 5)));
  const average = estimates.reduce((a, b) => a + b, 0) / estimates.length;
  estimates.forEach((e, i) => console.log(`Estimate ${i + 1}: ${e.toFixed(4)}`));
  console.log(`Average of estimates: ${average.toFixed(4)}`);

  await gce.shutdown();

  // The endpoint's status through the Client.
  const gcc = new Client();
  const status = await gcc.getEndpointStatus(tutorialEndpoint);
  console.log(`Endpoint status: ${status.status} (workers: ${status.workers}, idle: ${status.idle_workers}, queued: ${status.queued})`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
