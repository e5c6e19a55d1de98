#!/usr/bin/env node
// Validate .glb / .gltf files with the Khronos glTF-Validator; exit 1 if any has an error.
//
//   cd tools && npm install          # once: installs the pinned gltf-validator
//   node tools/validate_gltf.mjs mesh.glb [more.glb ...]
//
// Prints one JSON report summary per file (errors, warnings, infos and every message).
import { readFile } from "node:fs/promises";
import path from "node:path";
import validator from "gltf-validator";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/validate_gltf.mjs FILE.glb [FILE.glb ...]");
  process.exit(2);
}

let failed = false;
for (const file of files) {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    // A .gltf may reference buffers and images beside it.
    externalResourceFunction: (uri) =>
      readFile(path.join(path.dirname(file), decodeURIComponent(uri))).then(
        (data) => new Uint8Array(data),
      ),
  });
  const { numErrors, numWarnings, numInfos, numHints, messages } = report.issues;
  console.log(
    JSON.stringify(
      {
        file,
        validator: report.validatorVersion,
        errors: numErrors,
        warnings: numWarnings,
        infos: numInfos,
        hints: numHints,
        messages: messages.map((m) => `${m.code} ${m.pointer ?? ""}: ${m.message}`),
      },
      null,
      2,
    ),
  );
  failed ||= numErrors > 0;
}
process.exit(failed ? 1 : 0);
