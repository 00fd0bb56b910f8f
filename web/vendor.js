#!/usr/bin/env node
// Copies the browser libraries pinned in package.json from node_modules into the Python package
// (src/msec/web/static/vendor/<package>/...) and writes vendor/MANIFEST.json, so the installed
// msec serves them itself: no CDN at run time, no node_modules on the server.
//
//   node web/vendor.js          copy the files and rewrite MANIFEST.json
//   node web/vendor.js --check  exit 1, naming the file, if a committed file differs from
//                               node_modules or from the manifest, or a version from package-lock
//
// The file list is fixed (minified dist builds, CSS, the images Leaflet's CSS and default icon
// refer to, each licence) so an update of a package cannot slip new files into the package.
// MANIFEST.json is deterministic (keys sorted, two-space indent, newline at the end).
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const ROOT = path.join(__dirname, "..");
const NODE_MODULES = path.join(ROOT, "node_modules");
const LOCKFILE = path.join(ROOT, "package-lock.json");
const VENDOR_DIR = path.join(ROOT, "src", "msec", "web", "static", "vendor");
const MANIFEST_NAME = "MANIFEST.json";

// package -> [source path inside the package, destination inside vendor/<package>/]
const FILES = {
  "htmx.org": [
    ["dist/htmx.min.js", "htmx.min.js"],
    ["LICENSE", "LICENSE"],
  ],
  "htmx-ext-sse": [
    ["dist/sse.min.js", "sse.min.js"],
    ["LICENSE", "LICENSE"],
  ],
  uplot: [
    ["dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
    ["dist/uPlot.min.css", "uPlot.min.css"],
    ["LICENSE", "LICENSE"],
  ],
  leaflet: [
    ["dist/leaflet.js", "leaflet.js"],
    ["dist/leaflet.css", "leaflet.css"],
    // leaflet.css refers to layers*.png and marker-icon.png; L.Icon.Default adds the other two.
    ["dist/images/layers.png", "images/layers.png"],
    ["dist/images/layers-2x.png", "images/layers-2x.png"],
    ["dist/images/marker-icon.png", "images/marker-icon.png"],
    ["dist/images/marker-icon-2x.png", "images/marker-icon-2x.png"],
    ["dist/images/marker-shadow.png", "images/marker-shadow.png"],
    ["LICENSE", "LICENSE"],
  ],
  "leaflet.heat": [
    ["dist/leaflet-heat.js", "leaflet-heat.js"],
    ["LICENSE", "LICENSE"],
  ],
};

function sha256(bytes) {
  return crypto.createHash("sha256").update(bytes).digest("hex");
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((key) => [key, sortKeys(value[key])]),
    );
  }
  return value;
}

function rel(file) {
  return path.relative(process.cwd(), file);
}

// The version package-lock.json pins for a package; throws if the lockfile does not list it.
function lockedVersion(lock, pkg) {
  const entry = (lock.packages || {})[`node_modules/${pkg}`];
  if (!entry || !entry.version) {
    throw new Error(`${pkg} is not in package-lock.json; add it to package.json and npm install`);
  }
  return entry.version;
}

// The version installed in node_modules; throws if the package is not installed.
function installedVersion(pkg) {
  const file = path.join(NODE_MODULES, pkg, "package.json");
  if (!fs.existsSync(file)) {
    throw new Error(`${rel(file)} is missing; run \`npm ci\``);
  }
  return JSON.parse(fs.readFileSync(file, "utf8")).version;
}

// Every vendored file: its path under vendor/, source in node_modules and manifest entry.
function plan() {
  const lock = JSON.parse(fs.readFileSync(LOCKFILE, "utf8"));
  const files = [];
  for (const [pkg, list] of Object.entries(FILES)) {
    const version = installedVersion(pkg);
    const locked = lockedVersion(lock, pkg);
    if (version !== locked) {
      throw new Error(
        `node_modules has ${pkg}@${version} but package-lock.json pins ${locked}; run \`npm ci\``,
      );
    }
    for (const [from, to] of list) {
      const source = path.join(NODE_MODULES, pkg, from);
      const bytes = fs.readFileSync(source);
      files.push({
        name: `${pkg}/${to}`,
        source,
        bytes,
        entry: { package: pkg, version, sha256: sha256(bytes) },
      });
    }
  }
  return files;
}

function manifestText(files) {
  const manifest = Object.fromEntries(files.map((f) => [f.name, f.entry]));
  return `${JSON.stringify(sortKeys(manifest), null, 2)}\n`;
}

// Paths of every file under dir, relative to it with "/" separators.
function listFiles(dir, prefix = "") {
  if (!fs.existsSync(dir)) return [];
  const out = [];
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const name = prefix ? `${prefix}/${d.name}` : d.name;
    if (d.isDirectory()) out.push(...listFiles(path.join(dir, d.name), name));
    else out.push(name);
  }
  return out;
}

function check(files) {
  const problems = [];
  const manifestPath = path.join(VENDOR_DIR, MANIFEST_NAME);
  let manifest = null;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"));
  } catch (err) {
    problems.push(`${rel(manifestPath)} is missing or not JSON (${err.message})`);
  }
  for (const f of files) {
    const target = path.join(VENDOR_DIR, f.name);
    let committed = null;
    try {
      committed = fs.readFileSync(target);
    } catch (err) {
      if (err.code !== "ENOENT") throw err;
    }
    if (committed === null) {
      problems.push(`${rel(target)} is missing`);
    } else if (!committed.equals(f.bytes)) {
      problems.push(`${rel(target)} differs from ${rel(f.source)}`);
    }
    if (manifest) {
      const listed = manifest[f.name];
      if (!listed) {
        problems.push(`${rel(manifestPath)} does not list ${f.name}`);
      } else if (listed.package !== f.entry.package || listed.version !== f.entry.version) {
        problems.push(
          `${rel(manifestPath)} lists ${f.name} as ${listed.package}@${listed.version}, ` +
            `package-lock.json pins ${f.entry.package}@${f.entry.version}`,
        );
      } else if (committed !== null && listed.sha256 !== sha256(committed)) {
        problems.push(`${rel(target)} does not match its sha256 in ${rel(manifestPath)}`);
      } else if (listed.sha256 !== f.entry.sha256) {
        problems.push(`${rel(manifestPath)} has a stale sha256 for ${f.name}`);
      }
    }
  }
  const expected = new Set([MANIFEST_NAME, ...files.map((f) => f.name)]);
  for (const name of listFiles(VENDOR_DIR)) {
    if (!expected.has(name)) problems.push(`${rel(path.join(VENDOR_DIR, name))} is not vendored`);
  }
  if (manifest) {
    for (const name of Object.keys(manifest)) {
      if (!expected.has(name)) problems.push(`${rel(manifestPath)} lists unknown file ${name}`);
    }
    if (problems.length === 0 && fs.readFileSync(manifestPath, "utf8") !== manifestText(files)) {
      problems.push(`${rel(manifestPath)} is not in canonical form`);
    }
  }
  return problems;
}

function write(files) {
  // Start from an empty directory so files dropped from FILES do not linger in the package.
  fs.rmSync(VENDOR_DIR, { recursive: true, force: true });
  for (const f of files) {
    const target = path.join(VENDOR_DIR, f.name);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, f.bytes);
  }
  fs.writeFileSync(path.join(VENDOR_DIR, MANIFEST_NAME), manifestText(files));
}

function main(argv) {
  const wantCheck = argv.includes("--check");
  const unknown = argv.filter((a) => a !== "--check");
  if (unknown.length > 0) {
    process.stderr.write("usage: node web/vendor.js [--check]\n");
    return 2;
  }
  let files;
  try {
    files = plan();
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    return 1;
  }
  if (wantCheck) {
    const problems = check(files);
    for (const p of problems) process.stderr.write(`${p}\n`);
    if (problems.length > 0) {
      process.stderr.write("run `node web/vendor.js` and commit the result\n");
      return 1;
    }
    process.stdout.write(`${rel(VENDOR_DIR)} matches node_modules (${files.length} files)\n`);
    return 0;
  }
  write(files);
  const total = files.reduce((n, f) => n + f.bytes.length, 0);
  process.stdout.write(`wrote ${files.length} files (${total} bytes) to ${rel(VENDOR_DIR)}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
