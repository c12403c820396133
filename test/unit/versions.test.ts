import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { version } from '../../package.json';

// One version for the SDK, the CLI and the Python client: package.json's. `npm run pack` stamps it
// into every artifact; the Python sources in the repository carry it too, for `pip install -e python`.
const ROOT = join(__dirname, '..', '..');

test("the Python client's sources say package.json's version", () => {
  const pyproject = readFileSync(join(ROOT, 'python', 'pyproject.toml'), 'utf8');
  const init = readFileSync(join(ROOT, 'python', 'ferry_compute', '__init__.py'), 'utf8');
  expect(/^version = "(.*)"$/m.exec(pyproject)?.[1]).toBe(version);
  expect(/^__version__ = "(.*)"$/m.exec(init)?.[1]).toBe(version);
});
