// Loads the operator dashboard in headless Chromium (Debian's, driven by
// playwright-core), waits for its data, reads the figures it shows and
// saves a full-page screenshot.
//
// Inputs: ADMIN_URL, ADMIN_TOKEN (sent as HTTP Basic, as a browser would
// after its prompt), SCREENSHOT (PNG path), PROFILE (a fresh user data
// directory), CHROMIUM (the browser binary). Prints one JSON object.

import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const context = await chromium.launchPersistentContext(env('PROFILE'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  httpCredentials: { username: 'operator', password: env('ADMIN_TOKEN') },
  viewport: { width: 1280, height: 900 },
});
try {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const response = await page.goto(env('ADMIN_URL'));
  await page.waitForSelector('[data-testid="status"][data-ready="true"]', { timeout: 30000 });

  const card = async (id) => {
    const node = page.locator(`[data-testid="${id}"]`);
    return { text: (await node.textContent()).trim(), value: await node.getAttribute('data-value') };
  };
  const rows = async (table) => page.locator(`#${table} tbody tr[data-name]`).evaluateAll((trs) =>
    trs.map((tr) => ({ name: tr.dataset.name, amount: tr.dataset.amount, shown: tr.querySelector('[data-testid="amount"]').textContent })));
  const channels = await page.locator('#channels tbody tr[data-id]').evaluateAll((trs) =>
    trs.map((tr) => {
      const cells = {};
      for (const td of tr.querySelectorAll('td[data-field]')) cells[td.dataset.field] = td.textContent;
      return { id: tr.dataset.id, ...cells };
    }));
  const result = {
    status: response.status(),
    cards: {
      total: await card('revenue-total'),
      charged: await card('revenue-charged'),
      session: await card('revenue-session'),
      refunded: await card('revenue-refunded'),
      settled: await card('settled-total'),
      exposure: await card('exposure-total'),
      open: await card('channels-open'),
    },
    byModel: await rows('by-model'),
    byRoute: await rows('by-route'),
    channels,
    modelBars: await page.locator('#chart-model svg rect').count(),
    routeBars: await page.locator('#chart-route svg rect').count(),
    latencyRows: await page.locator('#latency tbody tr[data-route]').evaluateAll((trs) => trs.map((tr) => tr.dataset.route)),
    refusalCodes: await page.locator('#chart-refusals svg rect').evaluateAll((rects) =>
      Object.fromEntries(rects.map((r) => [r.dataset.code, Number(r.dataset.count)]))),
    recentRefusals: await page.locator('#refusals tbody tr').count(),
    errors,
  };
  await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await context.close();
}
