// Copy the browser builds of pusher-js and laravel-echo from node_modules into static/vendor,
// which the app serves itself (no CDN: the demo must work offline). Run after `npm install`.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const vendor = join(here, "static", "vendor");
mkdirSync(vendor, { recursive: true });

const files = {
  "pusher.min.js": join(modules, "pusher-js/dist/web/pusher.min.js"),
  "echo.iife.js": join(modules, "laravel-echo/dist/echo.iife.js"),
};
for (const [name, source] of Object.entries(files)) {
  copyFileSync(source, join(vendor, name));
  console.log(`vendor: ${name} <- ${source}`);
}
