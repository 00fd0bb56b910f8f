#!/usr/bin/env node
// Compiles CheckpointAnchor.sol with the exact solc (solcjs) pinned in package.json and writes
// src/msec/anchor/contract/CheckpointAnchor.json, the ABI and bytecode msec.anchor deploys.
//
//   node contracts/compile.js          rewrite the JSON
//   node contracts/compile.js --check  exit 1 if the committed JSON differs from a fresh build
//
// The output is deterministic: same source + same solc + same settings give the same bytes
// (keys sorted, two-space indent, newline at the end), so CI can compare it byte for byte.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const CONTRACT = "CheckpointAnchor";
const SOURCE_NAME = `${CONTRACT}.sol`;
const SOURCE_PATH = path.join(__dirname, SOURCE_NAME);
const OUTPUT_PATH = path.join(
  __dirname, "..", "src", "msec", "anchor", "contract", `${CONTRACT}.json`,
);

// "paris" (no PUSH0) so that chains that lag behind mainnet forks (GoQuorum, older Besu
// genesis configs) run the code too; fixed runs so the bytecode never depends on defaults.
const SETTINGS = {
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: {
    [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((key) => [key, sortKeys(value[key])]),
    );
  }
  return value;
}

function build() {
  const source = fs.readFileSync(SOURCE_PATH);
  const input = {
    language: "Solidity",
    sources: { [SOURCE_NAME]: { content: source.toString("utf8") } },
    settings: SETTINGS,
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage || e.message);
  if (errors.length > 0) {
    throw new Error(`${SOURCE_NAME} does not compile (${errors.length} error(s))`);
  }
  const compiled = output.contracts[SOURCE_NAME][CONTRACT];
  const { outputSelection, ...settings } = SETTINGS;
  const artifact = {
    contract: CONTRACT,
    solc_version: solc.version(),
    settings,
    source_sha256: crypto.createHash("sha256").update(source).digest("hex"),
    abi: compiled.abi,
    bytecode: `0x${compiled.evm.bytecode.object}`,
    deployed_bytecode: `0x${compiled.evm.deployedBytecode.object}`,
  };
  return `${JSON.stringify(sortKeys(artifact), null, 2)}\n`;
}

function main(argv) {
  const check = argv.includes("--check");
  const unknown = argv.filter((a) => a !== "--check");
  if (unknown.length > 0) {
    process.stderr.write(`usage: node contracts/compile.js [--check]\n`);
    return 2;
  }
  const fresh = build();
  const rel = path.relative(process.cwd(), OUTPUT_PATH);
  if (check) {
    let committed = null;
    try {
      committed = fs.readFileSync(OUTPUT_PATH, "utf8");
    } catch (err) {
      if (err.code !== "ENOENT") throw err;
    }
    if (committed !== fresh) {
      process.stderr.write(
        `${rel} is missing or does not match ${SOURCE_NAME} built with solc ${solc.version()}; ` +
          "run `node contracts/compile.js` and commit the result\n",
      );
      return 1;
    }
    process.stdout.write(`${rel} matches ${SOURCE_NAME}\n`);
    return 0;
  }
  fs.mkdirSync(path.dirname(OUTPUT_PATH), { recursive: true });
  fs.writeFileSync(OUTPUT_PATH, fresh);
  process.stdout.write(`wrote ${rel}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
