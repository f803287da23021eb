// Compile Solidity with solcjs (npm `solc`): standard-JSON input on stdin, output on stdout.
// Usage: node compile_solidity.js <node_modules dir>
// Imports such as "@openzeppelin/contracts/..." resolve inside that node_modules only.
'use strict';
const fs = require('fs');
const path = require('path');

const nodeModules = path.resolve(process.argv[2] || 'node_modules');
const solc = require(path.join(nodeModules, 'solc'));

function findImports(importPath) {
  const full = path.resolve(nodeModules, importPath);
  // Refuse paths that escape node_modules ("../../etc/passwd").
  if (!full.startsWith(nodeModules + path.sep)) {
    return { error: `import outside node_modules: ${importPath}` };
  }
  try {
    return { contents: fs.readFileSync(full, 'utf8') };
  } catch (err) {
    return { error: `cannot read ${importPath}: ${err.message}` };
  }
}

const input = fs.readFileSync(0, 'utf8');
const output = solc.compile(input, { import: findImports });
process.stdout.write(output);
process.stdout.write('\n');
