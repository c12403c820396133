/**
 * `npx tsx bench/profile-summary.ts <file.cpuprofile>... [--top=30]`: the functions with the most
 * self time in a V8 CPU profile (what `node --cpu-prof` and `npm run bench -- --profile` write),
 * with their share of the samples; several files are summed.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const top = Number(process.argv.find((a) => a.startsWith('--top='))?.slice(6) ?? 30);
const files = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (!files.length) {
  console.error('usage: tsx bench/profile-summary.ts <file.cpuprofile>... [--top=30]');
  process.exit(2);
}

const selfMs = new Map<string, number>();
let totalMs = 0;
for (const file of files) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // Each sample's time is the delta to the next one (V8 records the delta before each sample).
  profile.samples.forEach((id, i) => {
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const where = url ? `${relative(process.cwd(), url.replace(/^file:\/\//, ''))}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    selfMs.set(key, (selfMs.get(key) ?? 0) + ms);
    totalMs += ms;
  });
}

// Shares are of the busy time: a thread waiting for work shows as (idle).
const idleMs = selfMs.get('(idle)') ?? 0;
selfMs.delete('(idle)');
const busyMs = totalMs - idleMs;
console.log(
  `${files.length} profile(s) (a file per thread): ${(totalMs / 1000).toFixed(2)} s sampled, ${(busyMs / 1000).toFixed(2)} s busy\n`,
);
console.log('| self ms | % of busy | function |');
console.log('| --- | --- | --- |');
for (const [name, ms] of [...selfMs].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${ms.toFixed(0)} | ${((100 * ms) / busyMs).toFixed(1)} | ${name.replace(/\|/g, '\\|')} |`);
}
