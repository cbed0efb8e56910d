// Copy the browser builds of uPlot and pusher-js from node_modules into static/vendor, which
// reverbpy serves itself at {path}/console/static/vendor/ (no CDN: the console works offline).
// Run after `npm install` (`make reverbpy/console/static/vendor/.installed`).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const vendor = join(here, "static", "vendor");
mkdirSync(vendor, { recursive: true });

const files = {
  "uPlot.iife.min.js": join(modules, "uplot/dist/uPlot.iife.min.js"),
  "uPlot.min.css": join(modules, "uplot/dist/uPlot.min.css"),
  "pusher.min.js": join(modules, "pusher-js/dist/web/pusher.min.js"),
};
for (const [name, source] of Object.entries(files)) {
  copyFileSync(source, join(vendor, name));
  console.log(`vendor: ${name} <- ${source}`);
}
