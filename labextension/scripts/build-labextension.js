#!/usr/bin/env node
/*
 * `jupyter labextension build .` with `--core-path` set to the installed JupyterLab's
 * staging folder, so the build does not look up @jupyterlab/core-meta on the network.
 *
 * The Python that runs JupyterLab is found, in order, from $GLEITZEIT_PYTHON, $PYTHON, the
 * interpreter of the `jlpm` / `jupyter` script on PATH (its `#!` line: in pip's isolated
 * build environment and in a venv this is the right one), then `python3` / `python`.
 *
 * Usage: node scripts/build-labextension.js [--development]
 */
'use strict';

const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const here = path.resolve(__dirname, '..');
const development = process.argv.includes('--development');

function which(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) {
      continue;
    }
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

function shebangPython(script) {
  try {
    const first = fs.readFileSync(script, 'utf8').split('\n', 1)[0];
    const match = /^#!\s*(\S*python[\d.]*)\s*$/.exec(first);
    return match ? match[1] : null;
  } catch {
    return null;
  }
}

function works(python) {
  const r = spawnSync(python, ['-c', 'import jupyterlab'], { stdio: 'ignore' });
  return r.status === 0;
}

function findPython() {
  const candidates = [process.env.GLEITZEIT_PYTHON, process.env.PYTHON];
  for (const script of ['jlpm', 'jupyter', 'jupyter-lab']) {
    const found = which(script);
    if (found) {
      candidates.push(shebangPython(found));
    }
  }
  candidates.push('python3', 'python');
  for (const c of candidates) {
    if (c && works(c)) {
      return c;
    }
  }
  throw new Error(
    'build-labextension: no Python with jupyterlab found; set GLEITZEIT_PYTHON to one'
  );
}

const python = findPython();
const probe = [
  'import importlib.util, os, jupyterlab',
  'print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))',
  'print(1 if importlib.util.find_spec("jupyter_builder") else 0)'
].join('\n');
const [corePath, hasBuilder] = execFileSync(python, ['-c', probe], { encoding: 'utf8' })
  .trim()
  .split('\n');

// JupyterLab >= 4.6 delegates `jupyter labextension build` to the jupyter-builder package;
// call its module directly (its console script is not always on PATH).
const args = hasBuilder === '1'
  ? ['-m', 'jupyter_builder.main', 'build']
  : ['-m', 'jupyterlab.labextensions', 'build'];
args.push('--core-path', corePath);
if (development) {
  args.push('--development', 'True');
}
args.push(here);

console.log(`build-labextension: ${python} ${args.join(' ')}`);
const result = spawnSync(python, args, { stdio: 'inherit', cwd: here });
process.exit(result.status === null ? 1 : result.status);
