#!/usr/bin/env node
// Stands in for a native `solc` when Slither (crytic-compile) analyses contracts/ with
// `--solc scripts/solc-js-wrapper.mjs --solc-standard-json`: no native solc can be downloaded
// here, so it runs solc-js (node_modules/solc/solc.js) instead. See docs/slither.md.
// It speaks the two commands crytic-compile uses:
//   --version          prints solc-js's version;
//   --standard-json    reads the standard-JSON input on stdin and prints the output.
// What it changes on the way:
// - drops --allow-paths (solc-js does not know it) and passes --base-path . --include-path
//   node_modules, so that imports resolve as in scripts/compile.mjs;
// - sets the compiler settings of scripts/compile.mjs (viaIR, evmVersion, optimizer, metadata),
//   which crytic-compile does not, and without which PredictionMarket does not compile (stack
//   too deep); the output selection stays crytic-compile's;
// - has solc-js write to a file, then prints that file: solc-js exits before a pipe is drained,
//   and crytic-compile would read truncated JSON; drops solc-js's SMT notice line.
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const solcJs = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "solc", "solc.js");

// Kept equal to SETTINGS in scripts/compile.mjs (importing it would run a compilation).
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  viaIR: true,
  metadata: { bytecodeHash: "none", appendCBOR: false },
};

const SMT_NOTICE = ">>> Cannot retry compilation with SMT";

/** Runs solc.js with `args`, `input` on stdin, its stdout into a file; returns [status, stdout]. */
function runSolcJs(args, input) {
  const dir = mkdtempSync(join(tmpdir(), "solc-js-"));
  const outPath = join(dir, "out");
  const out = openSync(outPath, "w");
  try {
    const result = spawnSync(process.execPath, [solcJs, ...args], {
      input,
      stdio: ["pipe", out, "inherit"],
      maxBuffer: 1 << 30,
    });
    if (result.error) throw result.error;
    return [result.status ?? 1, readFileSync(outPath, "utf8")];
  } finally {
    closeSync(out);
    rmSync(dir, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
if (args.includes("--version")) {
  const [status, stdout] = runSolcJs(["--version"], "");
  process.stdout.write(stdout);
  process.exitCode = status;
} else if (args.includes("--standard-json")) {
  const input = JSON.parse(readFileSync(process.stdin.fd, "utf8"));
  input.settings = { ...(input.settings ?? {}), ...SETTINGS };
  const [status, stdout] = runSolcJs(
    ["--standard-json", "--base-path", ".", "--include-path", "node_modules"],
    JSON.stringify(input),
  );
  const kept = stdout
    .split("\n")
    .filter((line) => !line.startsWith(SMT_NOTICE))
    .join("\n");
  // No process.exit(): node exits once stdout is drained, so the reader gets all of it.
  process.stdout.write(kept);
  process.exitCode = status;
} else {
  process.stderr.write("usage: solc-js-wrapper.mjs --version | --standard-json [--allow-paths DIR]\n");
  process.exitCode = 2;
}
