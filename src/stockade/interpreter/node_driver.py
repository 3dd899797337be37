"""The JavaScript program that :mod:`.node` runs under ``node``: one per context.

It reads cells as JSON lines (``{"id", "code"}``) on stdin and runs each in Node's own global
context (``vm.Script.runInThisContext``), so declarations persist from cell to cell and every
Node global (``require``, ``fetch``, timers, ``Buffer``) is there. TypeScript contexts
transpile each cell first with ``require("typescript").transpileModule``. A cell that uses
``await`` at top level is rewritten into an async function whose declarations are hoisted to
globals and whose last expression is returned. The end of a cell is a marker on stdout (with
the cell's result or error, base64 JSON) and on stderr, as in the bash executor.
"""

SOURCE = r"""'use strict';
const vm = require('vm');
const util = require('util');
const path = require('path');
const Module = require('module');
const readline = require('readline');

const TOKEN = process.env.STOCKADE_MARK;
delete process.env.STOCKADE_MARK;
const TYPESCRIPT = process.argv[2] === 'typescript';
let ts = null;
if (TYPESCRIPT) {
  try {
    ts = require('typescript');
  } catch (err) {
    process.stderr.write('TypeScript contexts need the typescript module (Debian: node-typescript)\n');
    process.exit(3);
  }
}

globalThis.require = Module.createRequire(path.join(process.cwd(), '[cell]'));
globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;
globalThis.__filename = path.join(process.cwd(), '[cell]');
globalThis.__dirname = process.cwd();

let current = null;
let cells = 0;

function mark(cell, events) {
  if (current !== cell) return;
  current = null;
  const failed = events.some((e) => e.type === 'error') ? 1 : 0;
  const payload = Buffer.from(JSON.stringify(events)).toString('base64');
  process.stdout.write(`\x1e${TOKEN}:${cell.id}:${failed}:${payload}\x1e`);
  process.stderr.write(`\x1e${TOKEN}:${cell.id}\x1e`);
}

function resultEvents(value) {
  if (value === undefined) return [];
  const text = util.inspect(value, { depth: 4, maxArrayLength: 200, maxStringLength: 100000 });
  return [{ type: 'result', data: { 'text/plain': text }, is_main_result: true }];
}

function errorEvent(err) {
  if (err instanceof Error || (err && typeof err === 'object' && 'stack' in err)) {
    let name = String(err.name || 'Error');
    let value = String(err.message === undefined ? '' : err.message);
    if (/interrupted by .?SIGINT/.test(value)) {
      name = 'Interrupted';
    }
    const lines = String(err.stack || '').split('\n');
    const cut = lines.findIndex((l) => /node:vm|stockade-node-driver\.js/.test(l));
    return { type: 'error', name, value, traceback: (cut < 0 ? lines : lines.slice(0, cut)).join('\n') };
  }
  return { type: 'error', name: 'Error', value: util.inspect(err), traceback: '' };
}

function transpile(code) {
  const out = ts.transpileModule(code, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS },
    reportDiagnostics: true,
    fileName: 'cell.ts',
  });
  const errors = (out.diagnostics || []).filter(
    (d) => d.category === ts.DiagnosticCategory.Error && d.code !== 1375 && d.code !== 1378,
  );
  if (errors.length) {
    const text = errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    const err = new SyntaxError(text.join('\n'));
    err.stack = `SyntaxError: ${err.message}`;
    throw err;
  }
  return out.outputText;
}

function parser() {
  if (ts) return ts;
  try {
    ts = require('typescript');
  } catch (err) {
    ts = false;
  }
  return ts;
}

// Top-level await: the cell becomes the body of an async function. Its var/let/const and class
// names become globals (declared with var outside, assigned inside), function declarations are
// copied onto globalThis, and a last expression statement is returned.
function asyncWrap(code) {
  const t = parser();
  if (!t) return `(async () => {\n${code}\n})()`;
  const sf = t.createSourceFile('cell.js', code, t.ScriptTarget.Latest, true, t.ScriptKind.JS);
  const hoisted = new Set();
  const functions = [];
  const edits = [];
  const names = (node) => {
    if (t.isIdentifier(node)) hoisted.add(node.text);
    else for (const el of node.elements) if (!t.isOmittedExpression(el)) names(el.name);
  };
  const text = (node) => code.slice(node.getStart(sf), node.end);
  sf.statements.forEach((st, i) => {
    const start = st.getStart(sf);
    if (t.isVariableStatement(st)) {
      const parts = [];
      for (const d of st.declarationList.declarations) {
        names(d.name);
        if (d.initializer) parts.push(`(${text(d.name)} = ${text(d.initializer)})`);
      }
      edits.push([start, st.end, parts.length ? `void (${parts.join(', ')});` : ';']);
    } else if (t.isFunctionDeclaration(st) && st.name) {
      functions.push(st.name.text);
    } else if (t.isClassDeclaration(st) && st.name) {
      hoisted.add(st.name.text);
      edits.push([start, start, `${st.name.text} = `], [st.end, st.end, ';']);
    } else if (i === sf.statements.length - 1 && t.isExpressionStatement(st)) {
      edits.push([start, st.end, `return (${text(st.expression)});`]);
    }
  });
  let body = code;
  for (const [from, to, insert] of edits.sort((a, b) => b[0] - a[0] || b[1] - a[1])) {
    body = body.slice(0, from) + insert + body.slice(to);
  }
  const decl = hoisted.size ? `var ${[...hoisted].join(', ')}; ` : '';
  const copy = functions.map((n) => `globalThis[${JSON.stringify(n)}] = ${n};`).join(' ');
  return `${decl}(async () => { ${copy}\n${body}\n})()`;
}

function run(cell) {
  current = cell;
  cells += 1;
  const filename = `cell${cells}.${TYPESCRIPT ? 'ts' : 'js'}`;
  try {
    const code = TYPESCRIPT ? transpile(cell.code) : cell.code;
    let script;
    let wrapped = false;
    try {
      script = new vm.Script(code, { filename });
    } catch (err) {
      if (!(err instanceof SyntaxError) || !/\bawait\b/.test(code)) throw err;
      try {
        script = new vm.Script(asyncWrap(code), { filename });
      } catch (again) {
        throw err;
      }
      wrapped = true;
    }
    const value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
    if (!wrapped) return mark(cell, resultEvents(value));
    Promise.resolve(value).then(
      (v) => mark(cell, resultEvents(v)),
      (e) => mark(cell, [errorEvent(e)]),
    );
  } catch (err) {
    mark(cell, [errorEvent(err)]);
  }
}

process.on('SIGINT', () => {
  if (current) {
    mark(current, [{ type: 'error', name: 'Interrupted', value: 'the cell was interrupted', traceback: '' }]);
  }
});
process.on('uncaughtException', (err) => process.stderr.write(`Uncaught ${util.inspect(err)}\n`));
process.on('unhandledRejection', (err) => process.stderr.write(`Unhandled ${util.inspect(err)}\n`));

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  let cell;
  try {
    cell = JSON.parse(line);
  } catch (err) {
    return;
  }
  if (cell && typeof cell.code === 'string') run({ id: String(cell.id), code: cell.code });
});
lines.on('close', () => process.exit(0));
process.stdout.write(`\x1e${TOKEN}:0:0\x1e`);
process.stderr.write(`\x1e${TOKEN}:0\x1e`);
"""
