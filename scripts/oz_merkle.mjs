// Runs @openzeppelin/merkle-tree (the reference that market/merkle.py must match) on JSON from
// stdin and prints JSON on stdout. Values use OZ's JSON form: integers as decimal strings,
// bytes and addresses as 0x hex.
//
//   node scripts/oz_merkle.mjs [tree]  {values, encoding, multiproof?: [index, ...]}
//                                      -> {root, proofs, multiproof?, dump}
//   node scripts/oz_merkle.mjs load    {dump, multiproof?} -> the same, from StandardMerkleTree.load
//   node scripts/oz_merkle.mjs bench   {values, encoding}
//                                      -> {leaves, root, build_s, proofs_s, total_s}
//
// bench times StandardMerkleTree.of plus getProof for every leaf, as a caller that publishes
// all proofs would run them; reading and parsing the input is not timed.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import merkle from "@openzeppelin/merkle-tree";

const { StandardMerkleTree } = merkle;

function describe(tree, multiproof) {
  const out = { root: tree.root, proofs: [] };
  for (let i = 0; i < tree.length; i++) out.proofs.push(tree.getProof(i));
  if (multiproof !== undefined) out.multiproof = tree.getMultiProof(multiproof);
  out.dump = tree.dump();
  return out;
}

function bench({ values, encoding }) {
  const start = performance.now();
  const tree = StandardMerkleTree.of(values, encoding);
  const built = performance.now();
  let nodes = 0;
  for (let i = 0; i < tree.length; i++) nodes += tree.getProof(i).length;
  const end = performance.now();
  return {
    leaves: tree.length,
    root: tree.root,
    proof_nodes: nodes,
    build_s: (built - start) / 1000,
    proofs_s: (end - built) / 1000,
    total_s: (end - start) / 1000,
  };
}

const mode = process.argv[2] ?? "tree";
const input = JSON.parse(readFileSync(0, "utf8"));
let result;
if (mode === "tree") result = describe(StandardMerkleTree.of(input.values, input.encoding), input.multiproof);
else if (mode === "load") result = describe(StandardMerkleTree.load(input.dump), input.multiproof);
else if (mode === "bench") result = bench(input);
else {
  console.error(`unknown mode '${mode}': tree, load or bench`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(result));
