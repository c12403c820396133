import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { build, type BuildOptions } from 'esbuild';
import { rollup } from 'rollup';
import { dts } from 'rollup-plugin-dts';

/**
 * `npm run pack`: the installable artifacts, in dist/pack/:
 *   - the TypeScript SDK as an npm tarball (@ferry-compute/sdk): ESM and CommonJS builds of sdk/,
 *     one bundled declaration file, no runtime dependencies;
 *   - the CLI as an npm tarball (@ferry-compute/cli): `ferry` with every command, the worker agent,
 *     the block agent and the runtime runners, all bundled; dynalite (for `ferry local up`) is its one
 *     dependency, since its storage is a native module;
 *   - the Python client as a wheel (ferry_compute), standard library only.
 * One version for all three: this repository's package.json. Prints what it wrote.
 */
const ROOT = join(__dirname, '..');
const OUT = join(ROOT, 'dist', 'pack');
const STAGE = join(OUT, 'stage');
const rootPackage = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  engines: { node: string };
  dependencies: Record<string, string>;
};
const VERSION = rootPackage.version;

/** What every package.json of ours says alike. */
const common = {
  version: VERSION,
  license: rootPackage.license,
  engines: rootPackage.engines,
};

const bundle: BuildOptions = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning', legalComments: 'none' };

export interface Artifact {
  name: string;
  file: string;
  bytes: number;
  /** npm tarballs: the files inside, relative to the package root. */
  files?: string[];
}

async function packSdk(): Promise<Artifact> {
  const dir = join(STAGE, 'sdk');
  const entry = join(ROOT, 'sdk', 'index.ts');
  await build({ ...bundle, entryPoints: [entry], format: 'cjs', outfile: join(dir, 'dist', 'index.cjs') });
  await build({ ...bundle, entryPoints: [entry], format: 'esm', outfile: join(dir, 'dist', 'index.mjs') });
  // One declaration file: the shapes the SDK shares with the server are inlined, so it names no server module.
  const types = await rollup({
    input: entry,
    plugins: [dts({ tsconfig: join(ROOT, 'tsconfig.json'), compilerOptions: { types: ['node'] } })],
  });
  const { output } = await types.generate({ format: 'es' });
  await types.close();
  // Its signatures name Node's types (Buffer, NodeJS.ProcessEnv): a Node project has @types/node.
  const declarations = `/// <reference types="node" />\n${output[0].code}`;
  const imports = [...declarations.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]);
  if (imports.length) throw new Error(`the SDK's declarations import ${imports.join(', ')}: its types must stand alone`);
  writeFileSync(join(dir, 'dist', 'index.d.mts'), declarations);
  writeFileSync(join(dir, 'dist', 'index.d.cts'), declarations);
  writePackage(dir, {
    name: '@ferry-compute/sdk',
    description:
      'TypeScript and JavaScript client for Ferry, a self-hosted function-as-a-service: submit functions to your endpoints, get futures back.',
    ...common,
    keywords: ['faas', 'globus-compute', 'hpc', 'aws'],
    type: 'commonjs',
    main: './dist/index.cjs',
    module: './dist/index.mjs',
    types: './dist/index.d.cts',
    exports: {
      '.': {
        import: { types: './dist/index.d.mts', default: './dist/index.mjs' },
        require: { types: './dist/index.d.cts', default: './dist/index.cjs' },
      },
      './package.json': './package.json',
    },
    files: ['dist', 'README.md'],
    sideEffects: false,
  });
  copyFileSync(join(__dirname, 'sdk', 'README.md'), join(dir, 'README.md'));
  return npmPack(dir);
}

async function packCli(): Promise<Artifact> {
  const dir = join(STAGE, 'cli');
  const dist = join(dir, 'dist');
  // dynalite stays a dependency (its LevelDB store is a native module); tsx is only for running sources.
  const external = ['dynalite', 'dynalite/*', 'tsx', 'tsx/*'];
  const runners = ['node_runner.js', 'python_runner.py'].map((f) => join(ROOT, 'workers', 'runtime', f));
  await build({ ...bundle, entryPoints: [join(ROOT, 'cli', 'ferry.ts')], format: 'cjs', outfile: join(dist, 'ferry.js'), external });
  // Beside ferry.js, as the modules bundled into it look for them (their __dirname is dist/).
  await build({
    ...bundle,
    entryPoints: [join(ROOT, 'workers', 'manager', 'block-agent.ts')],
    format: 'cjs',
    outfile: join(dist, 'block-agent.js'),
    external,
  });
  // The agent `ferry local up` supervises runs in a process of its own, from dist/worker/ as under `npm start`.
  await build({
    ...bundle,
    entryPoints: [join(ROOT, 'workers', 'main.ts')],
    format: 'cjs',
    outfile: join(dist, 'worker', 'main.js'),
    external,
  });
  for (const runner of runners) for (const dir of [dist, join(dist, 'worker')]) copyFileSync(runner, join(dir, basename(runner)));
  mkdirSync(join(dir, 'bin'), { recursive: true });
  copyFileSync(join(__dirname, 'cli', 'bin', 'ferry.js'), join(dir, 'bin', 'ferry.js'));
  chmodSync(join(dir, 'bin', 'ferry.js'), 0o755);
  writePackage(dir, {
    name: '@ferry-compute/cli',
    description: 'The ferry command: endpoints, workers, functions and tasks of a Ferry deployment, and the whole local stack.',
    ...common,
    keywords: ['faas', 'globus-compute', 'hpc', 'slurm', 'aws'],
    bin: { ferry: './bin/ferry.js' },
    files: ['bin', 'dist', 'README.md'],
    dependencies: { dynalite: rootPackage.dependencies.dynalite },
  });
  copyFileSync(join(__dirname, 'cli', 'README.md'), join(dir, 'README.md'));
  return npmPack(dir);
}

/** A Python with setuptools and wheel: FERRY_PACK_PYTHON, else python3, else Debian's /usr/bin/python3. */
function wheelPython(): string {
  const candidates = [process.env.FERRY_PACK_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => !!c);
  for (const python of candidates) {
    if (spawnSync(python, ['-c', 'import setuptools, wheel'], { stdio: 'ignore' }).status === 0) return python;
  }
  throw new Error(
    `no Python with setuptools and wheel among ${candidates.join(', ')}: install Debian's python3-setuptools and python3-wheel, or set FERRY_PACK_PYTHON`,
  );
}

function packPython(): Artifact {
  const dir = join(STAGE, 'python');
  cpSync(join(ROOT, 'python'), dir, { recursive: true, filter: (src) => !/(__pycache__|\.egg-info|\/build|\/tests)$/.test(src) });
  // The version from package.json, into the metadata and ferry_compute.__version__ alike.
  const stamp = (file: string, pattern: RegExp, line: string) => {
    const text = readFileSync(file, 'utf8');
    if (!pattern.test(text)) throw new Error(`no version line in ${relative(ROOT, file)}`);
    writeFileSync(file, text.replace(pattern, line));
  };
  stamp(join(dir, 'pyproject.toml'), /^version = ".*"$/m, `version = "${VERSION}"`);
  stamp(join(dir, 'ferry_compute', '__init__.py'), /^__version__ = ".*"$/m, `__version__ = "${VERSION}"`);
  execFileSync(wheelPython(), ['-m', 'pip', 'wheel', '--quiet', '--no-build-isolation', '--no-deps', '--no-cache-dir', '-w', OUT, dir], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PIP_NO_INDEX: '1' },
  });
  const file = join(OUT, `ferry_compute-${VERSION}-py3-none-any.whl`);
  return { name: 'ferry-compute (wheel)', file, bytes: readFileSync(file).byteLength };
}

function writePackage(dir: string, manifest: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
}

function npmPack(dir: string): Artifact {
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', OUT], { cwd: dir, encoding: 'utf8' });
  const [info] = JSON.parse(out) as { name: string; filename: string; size: number; files: { path: string }[] }[];
  return { name: info.name, file: join(OUT, info.filename), bytes: info.size, files: info.files.map((f) => f.path) };
}

export async function pack(): Promise<Artifact[]> {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(STAGE, { recursive: true });
  const artifacts = [await packSdk(), await packCli(), packPython()];
  rmSync(STAGE, { recursive: true, force: true });
  return artifacts;
}

if (require.main === module) {
  pack().then(
    (artifacts) => {
      for (const a of artifacts)
        console.log(
          `${relative(ROOT, a.file).padEnd(48)} ${(a.bytes / 1024).toFixed(0).padStart(6)} KiB${a.files ? `  ${a.files.length} files` : ''}`,
        );
    },
    (err: Error) => {
      console.error(`npm run pack: ${err.message}`);
      process.exit(1);
    },
  );
}
