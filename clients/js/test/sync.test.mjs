import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { SRC_DIR, STATIC_DIR, clientFiles } from "../scripts/sync.mjs";

test("the npm package's src/ is an exact copy of reactive/static/reactive/ (run `npm run sync`)", () => {
  const files = clientFiles(STATIC_DIR);
  assert.ok(files.includes("client.js") && files.includes("react.js"));
  assert.deepEqual(clientFiles(SRC_DIR), files, "src/ has other files than the static folder");
  for (const file of files) {
    assert.equal(
      readFileSync(join(SRC_DIR, file), "utf8"),
      readFileSync(join(STATIC_DIR, file), "utf8"),
      `src/${file} differs from reactive/static/reactive/${file}: run \`npm run sync\``,
    );
  }
});
