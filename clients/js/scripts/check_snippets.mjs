// Type-check every JavaScript and TypeScript snippet of the two READMEs, as written.
//
// Each ```js, ```jsx, ```ts and ```tsx fenced block of the repository's README.md and of this
// package's README.md becomes a file of its own in a temporary folder inside the package, and
// `tsc --noEmit` checks them all with the package's own .d.ts files, reached through its
// "exports" like an app's import would be (strict, as Vite's React + TypeScript template is).
// A snippet must therefore stand alone: its imports, no undefined names, no `...` placeholders.
// The one rewrite: a Django page imports the client from its static URL
// ("/static/reactive/client.js" or "{% static 'reactive/client.js' %}"), which is this package.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const READMES = [join(PACKAGE, "..", "..", "README.md"), join(PACKAGE, "README.md")];
const FENCE = /^([ \t]*)```(js|jsx|ts|tsx)[ \t]*\n([\s\S]*?)^\1```[ \t]*$/gm;
const STATIC_CLIENT = /["'](?:\/static\/reactive\/client\.js|\{% static 'reactive\/client\.js' %\})["']/g;

/** The snippets of one markdown file: `{ name, lang, code, line }`. */
export function snippetsOf(path) {
  const text = readFileSync(path, "utf8");
  const found = [];
  for (const match of text.matchAll(FENCE)) {
    const [, indent, lang, body] = match;
    const code = body
      .split("\n")
      .map((line) => (line.startsWith(indent) ? line.slice(indent.length) : line))
      .join("\n")
      .replace(STATIC_CLIENT, '"django-reactive-queries"');
    const line = text.slice(0, match.index).split("\n").length;
    found.push({ lang, code, line, source: path });
  }
  return found;
}

function main() {
  const snippets = READMES.flatMap(snippetsOf);
  // Inside the package, so that "django-reactive-queries" resolves to itself and the types of
  // react come from its node_modules.
  const folder = mkdtempSync(join(PACKAGE, ".snippets-"));
  try {
    const files = snippets.map((snippet, index) => {
      const name = `snippet-${String(index + 1).padStart(2, "0")}.${snippet.lang}`;
      writeFileSync(join(folder, name), snippet.code);
      return { ...snippet, name };
    });
    writeFileSync(
      join(folder, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          lib: ["ES2022", "DOM", "DOM.Iterable"],
          module: "ESNext",
          moduleResolution: "bundler",
          moduleDetection: "force",
          jsx: "react-jsx",
          strict: true,
          allowJs: true,
          checkJs: true,
          noEmit: true,
          skipLibCheck: false,
          types: [],
        },
        include: ["*"],
      }),
    );
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    const run = spawnSync(process.execPath, [tsc, "-p", folder], { encoding: "utf8" });
    if (run.status !== 0) {
      // Name each failing snippet by its README and line, not by the temporary file.
      let output = run.stdout + run.stderr;
      for (const file of files) {
        const where = `${relative(process.cwd(), file.source)}, the snippet at line ${file.line}, `;
        output = output.replaceAll(`${relative(process.cwd(), join(folder, file.name))}(`, `${where}(`);
      }
      console.error(output);
      console.error(`README snippets: type errors (${files.length} snippets checked)`);
      process.exit(1);
    }
    console.log(`README snippets: ${files.length} type-checked with tsc, no errors`);
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
