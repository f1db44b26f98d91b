// Drives the fleet page in headless Chromium (Debian's, through playwright-core) for tests/browser.rs, or takes the
// README's screenshot (`SCREENSHOT_ONLY=1`). Everything it needs comes from the environment:
//   PLAYWRIGHT_CORE  the playwright-core package directory      CHROMIUM     the browser binary
//   FLEET_URL        the page                                   SCREENSHOT   where to save a full-page screenshot
//   BEARER           the operator's Entra ID token for the API (App Service Authentication takes it from a browser too)
//   EXPECT           {"<device name>": "<health>", …}: every row the page must show, in that state
//   FILTER           {"status": "<health>", "devices": ["<name>", …]}: choosing that status in the form shows those
//   RECOVERED        a device name the recoveries table must list as recovered, with a time to recover
// Prints one line per check and `N passed, 0 failed` at the end; exits non-zero on the first failure.
'use strict';
const assert = require('node:assert/strict');
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

let passed = 0;
async function check(what, body) {
  await body();
  passed += 1;
  console.log(`ok - ${what}`);
}

async function main() {
  const url = new URL(env('FLEET_URL'));
  // Chromium refuses to sandbox itself as root (CI runs as root).
  const args = process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [];
  const browser = await chromium.launch({ executablePath: env('CHROMIUM'), headless: true, args });
  try {
    const signedIn = { Authorization: `Bearer ${env('BEARER')}` };
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, extraHTTPHeaders: signedIn });
    const page = await context.newPage();
    const elsewhere = [];
    const problems = [];
    page.on('request', (r) => { if (new URL(r.url()).origin !== url.origin) elsewhere.push(r.url()); });
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(String(e)));

    const response = await page.goto(url.href);
    if (process.env.SCREENSHOT_ONLY) {
      assert.equal(response.status(), 200, 'the page answers 200');
      await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
      console.log(`screenshot saved to ${process.env.SCREENSHOT}`);
      return;
    }
    await check('the page answers 200 as HTML', async () => {
      assert.equal(response.status(), 200);
      assert.match(response.headers()['content-type'], /^text\/html/);
      assert.equal(await page.title(), 'edgevault fleet');
    });

    const expected = JSON.parse(env('EXPECT'));
    for (const [name, health] of Object.entries(expected)) {
      await check(`${name} is shown ${health}`, async () => {
        const row = page.locator(`#fleet tbody tr[data-device="${name}"]`);
        assert.equal(await row.count(), 1, `one row for ${name}`);
        assert.equal(await row.getAttribute('data-health'), health);
        // What a person sees: the badge's text and, for a healthy device, every cell ticked.
        const badge = await row.locator('.health').innerText();
        assert.ok(badge.length > 0);
        if (health === 'healthy') {
          assert.equal(await row.locator('td.missing').count(), 0, `${name} has no missing cell`);
          assert.ok(await row.locator('td.ok').count() >= 5, `${name} shows its checks ticked`);
        } else {
          assert.ok(await row.locator('.missing').count() > 0, `${name} shows what is wrong`);
        }
        const link = await row.locator('a').first().getAttribute('href');
        assert.match(link, /^https:\/\/portal\.azure\.com\/#@[^/]+\/resource\/subscriptions\//);
      });
    }
    await check('every device row is one the test expects', async () => {
      const names = await page.locator('#fleet tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.device));
      assert.deepEqual(names.sort(), Object.keys(expected).sort());
    });

    if (process.env.RECOVERED) {
      await check(`the recoveries table lists ${process.env.RECOVERED} as recovered with its time`, async () => {
        const row = page.locator('#recoveries + table tbody tr', { hasText: process.env.RECOVERED });
        assert.ok(await row.count() >= 1);
        assert.match(await row.first().innerText(), /recovered[\s\S]*\d+(\.\d)? (ms|s|min|h)/);
      });
    }

    await check('a screenshot is saved', async () => {
      await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
    });

    const filter = JSON.parse(env('FILTER'));
    await check(`choosing status ${filter.status} in the form narrows the list to ${filter.devices.join(', ')}`, async () => {
      await page.selectOption('select[name=status]', filter.status);
      await Promise.all([page.waitForURL((u) => u.searchParams.get('status') === filter.status), page.click('form button[type=submit]')]);
      const names = await page.locator('#fleet tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.device));
      assert.deepEqual(names.sort(), [...filter.devices].sort());
      assert.equal(await page.locator('select[name=status]').inputValue(), filter.status, 'the form shows the filter');
    });

    await check('the page reads the same without JavaScript', async () => {
      const plain = await browser.newContext({ javaScriptEnabled: false, extraHTTPHeaders: signedIn });
      const p = await plain.newPage();
      await p.goto(url.href);
      const rows = await p.locator('#fleet tbody tr').count();
      assert.equal(rows, Object.keys(expected).length);
      await plain.close();
    });

    await check('without a sign-in the page is refused (401) and shows no device', async () => {
      const stranger = await browser.newContext();
      const p = await stranger.newPage();
      const refused = await p.goto(url.href);
      assert.equal(refused.status(), 401);
      assert.equal(await p.locator('#fleet tbody tr').count(), 0);
      await stranger.close();
    });

    await check('nothing was fetched from elsewhere and the browser reported no error', async () => {
      assert.deepEqual(elsewhere, []);
      assert.deepEqual(problems, []);
    });
  } finally {
    await browser.close();
  }
  console.log(`${passed} passed, 0 failed`);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
});
