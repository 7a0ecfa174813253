// Run one test script in a page of headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) and print its result as one JSON line. Used by ugate_core.testing.browser_run.
// Input (a JSON file named by argv[2]): {url, script, flags, timeout_ms}. `script` is the body of
// an async function evaluated in the page; what it returns (JSON-serialisable) is the result.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-features=Translate,OptimizationHints,MediaRouter',
  '--no-default-browser-check', '--mute-audio'];

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ugate-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.UGATE_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: [...FLAGS, ...(spec.flags || [])],
      ignoreDefaultArgs: ['--enable-automation'],
      timeout: 30000,
    });
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => process.stderr.write(`page ${m.type()}: ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`page error: ${e}\n`));
    await page.goto(spec.url, { timeout: 15000 });
    const fn = `(async () => { ${spec.script}\n })()`;
    const result = await Promise.race([
      page.evaluate(fn),
      new Promise((_, reject) => setTimeout(
        () => reject(new Error(`page script timed out after ${spec.timeout_ms} ms`)), spec.timeout_ms)),
    ]);
    process.stdout.write(JSON.stringify({ ok: true, result: result === undefined ? null : result }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e) }) + '\n');
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
main().then(() => process.exit(0));
