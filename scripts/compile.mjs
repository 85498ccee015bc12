// Compiles contracts/**/*.sol with solc-js (standard JSON) into market/artifacts/.
// The only place in the project that runs solc. Deterministic: sources are read in sorted
// order, the metadata hash is left out of the bytecode, and the settings below are pinned.
// Skips the work when the sources, the settings and the compiler are what built the artifacts.
// Usage: node scripts/compile.mjs [--force] [--quiet] [--out DIR]
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const contractsDir = join(root, "contracts");
const outFlag = process.argv.indexOf("--out");
const outDir = outFlag > 0 ? process.argv[outFlag + 1] : join(root, "market", "artifacts");

export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  viaIR: true,
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"] } },
};

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".sol") ? [join(dir, e.name)] : []))
    .sort();
}

function findImport(path) {
  for (const base of [root, join(root, "node_modules")]) {
    const full = join(base, path);
    if (existsSync(full)) return { contents: readFileSync(full, "utf8") };
  }
  return { error: `import not found: ${path}` };
}

const files = walk(contractsDir);
const sources = Object.fromEntries(files.map((f) => [relative(root, f), { content: readFileSync(f, "utf8") }]));
const fingerprint = createHash("sha256")
  .update(solc.version())
  .update(JSON.stringify(SETTINGS))
  .update(JSON.stringify(sources))
  .digest("hex");
const stampPath = join(outDir, ".fingerprint");
const force = process.argv.includes("--force");
if (!force && existsSync(stampPath) && readFileSync(stampPath, "utf8") === fingerprint) {
  process.exit(0);
}

const input = { language: "Solidity", sources, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  if (e.severity !== "error" && !process.argv.includes("--quiet")) console.error(e.formattedMessage);
}
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
let count = 0;
for (const [source, contracts] of Object.entries(output.contracts)) {
  if (!source.startsWith("contracts/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
    const artifact = {
      contractName: name,
      sourceName: source,
      compiler: solc.version(),
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
    writeFileSync(join(outDir, `${name}.json`), JSON.stringify(artifact, null, 1) + "\n");
    count += 1;
  }
}
writeFileSync(stampPath, fingerprint);
console.error(`compiled ${files.length} sources into ${count} artifacts (solc ${solc.version()})`);
