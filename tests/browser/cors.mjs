// Drives Debian's headless Chromium through playwright-core for tests/browser.rs.
//
// Env: PAGE_ALLOWED and PAGE_BLOCKED (page URLs, each with ?api=...&mode=...), CHROMIUM
// (default /usr/bin/chromium). Loads each page in a fresh profile, waits for the page's own
// script to finish its fetches, and prints one JSON object on stdout:
//   {"user_agent": "...", "allowed": {"origin", "results", "console"}, "blocked": {...}}
// Nothing is downloaded: the browser is the system's, never `playwright install`.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const pages = [
  ['allowed', process.env.PAGE_ALLOWED],
  ['blocked', process.env.PAGE_BLOCKED],
];
for (const [name, url] of pages) {
  if (!url) {
    console.error(`PAGE_${name.toUpperCase()} is not set`);
    process.exit(2);
  }
}

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const userDataDir = mkdtempSync(join(tmpdir(), 'tollgate-chromium-'));

let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args,
    timeout: 60_000,
  });
  const out = {};
  for (const [name, url] of pages) {
    const page = await context.newPage();
    const console_ = [];
    page.on('console', (m) => console_.push({ type: m.type(), text: m.text() }));
    page.on('pageerror', (e) => console_.push({ type: 'pageerror', text: String(e) }));
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    await page.waitForFunction(() => window.__done === true, null, { timeout: 30_000 });
    out[name] = {
      origin: await page.evaluate(() => location.origin),
      results: await page.evaluate(() => window.__results),
      console: console_,
    };
    out.user_agent = await page.evaluate(() => navigator.userAgent);
    await page.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
