// Tollgate operator dashboard: reads /api/dashboard (same origin, the
// browser's admin credentials) and draws it. No framework, no build step.
'use strict';

const COLORS = ['#2b6cb0', '#dd6b20', '#38a169', '#805ad5', '#d53f8c', '#319795', '#b7791f', '#e53e3e', '#4a5568', '#00a3c4'];
let range = { days: 7, bucket: 'hour' };

// Base units (a decimal string) as token units with 6 decimals, exactly.
function units(base) {
  const s = String(base ?? '0').replace(/^0+(?=\d)/, '');
  const padded = s.padStart(7, '0');
  return padded.slice(0, -6) + '.' + padded.slice(-6);
}

function num(base) {
  return Number(base ?? 0);
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function when(unix) {
  if (!unix) return '–';
  return new Date(unix * 1000).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

function label(at, bucket) {
  const d = new Date(at * 1000).toISOString();
  return bucket >= 86400 ? d.slice(5, 10) : d.slice(5, 10) + ' ' + d.slice(11, 13) + 'h';
}

// Stacked bars over time: one bar per bucket, one segment per key.
function stacked(container, legend, series, field, bucketSecs) {
  container.replaceChildren();
  legend.replaceChildren();
  if (!series.length) {
    container.append(el('p', { class: 'empty' }, 'No revenue in this range yet.'));
    return;
  }
  const keys = [...new Set(series.flatMap((b) => Object.keys(b[field])))].sort();
  const color = (k) => COLORS[keys.indexOf(k) % COLORS.length];
  const totals = series.map((b) => Object.values(b[field]).reduce((a, v) => a + num(v), 0));
  const max = Math.max(...totals, 1);
  const W = 900, H = 240, left = 70, bottom = 28, top = 10;
  const plotW = W - left - 10, plotH = H - top - bottom;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    root.append(svg('line', { x1: left, x2: W - 10, y1: y, y2: y, stroke: '#e3e6ea' }));
    root.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#6b7685' },
      units(String(Math.round((max * i) / 4)))));
  }
  const slot = plotW / series.length;
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  series.forEach((bucket, i) => {
    let y = top + plotH;
    const x = left + i * slot + (slot - barW) / 2;
    for (const key of keys) {
      const value = bucket[field][key];
      if (!value) continue;
      const h = (num(value) / max) * plotH;
      y -= h;
      const rect = svg('rect', { x, y, width: barW, height: Math.max(h, 0.5), fill: color(key) });
      rect.append(svg('title', {}, `${label(bucket.at, bucketSecs)} · ${key}: ${units(value)}`));
      root.append(rect);
    }
    const every = Math.ceil(series.length / 12);
    if (i % every === 0) {
      root.append(svg('text', { x: x + barW / 2, y: H - 8, 'text-anchor': 'middle', 'font-size': 11, fill: '#6b7685' },
        label(bucket.at, bucketSecs)));
    }
  });
  container.append(root);
  for (const key of keys) {
    const item = el('span');
    const swatch = el('i');
    swatch.style.background = color(key);
    item.append(swatch, document.createTextNode(key));
    legend.append(item);
  }
}

function ranked(table, rows, testid) {
  const body = table.tBodies[0];
  body.replaceChildren();
  const max = Math.max(...rows.map((r) => num(r.amount)), 1);
  for (const row of rows) {
    const tr = el('tr', { 'data-testid': testid, 'data-name': row.name, 'data-amount': row.amount });
    tr.append(el('td', {}, row.name), el('td', { class: 'num' }, String(row.requests)),
      el('td', { class: 'num', 'data-testid': 'amount' }, units(row.amount)));
    const bar = el('td', { class: 'bar' });
    const span = el('span');
    span.style.width = `${(num(row.amount) / max) * 100}%`;
    bar.append(span);
    tr.append(bar);
    body.append(tr);
  }
  if (!rows.length) {
    const tr = el('tr');
    tr.append(el('td', { colspan: 4, class: 'empty' }, 'Nothing yet.'));
    body.append(tr);
  }
}

function channels(table, list) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const c of list) {
    const tr = el('tr', { 'data-testid': 'channel', 'data-id': c.id });
    const short = c.id.slice(0, 10) + '…' + c.id.slice(-6);
    tr.append(el('td', { title: c.id }, short), el('td', { class: `status-${c.status}` }, c.status + (c.settling ? ' (settling)' : '')));
    for (const field of ['deposit', 'accepted', 'spent', 'settled', 'exposure']) {
      tr.append(el('td', { class: 'num', 'data-field': field }, units(c[field])));
    }
    tr.append(el('td', {}, when(c.last_settled_at)));
    body.append(tr);
  }
  if (!list.length) {
    const tr = el('tr');
    tr.append(el('td', { colspan: 8, class: 'empty' }, 'No session channels.'));
    body.append(tr);
  }
}

function triple(p) {
  const f = (v) => (v === null || v === undefined ? '–' : v.toFixed(1));
  return `${f(p.p50)} / ${f(p.p90)} / ${f(p.p99)}`;
}

function latency(table, data) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const r of [data.overall, ...data.routes]) {
    if (!r.count) continue;
    const tr = el('tr', { 'data-testid': 'latency-row', 'data-route': r.route });
    tr.append(el('td', {}, r.route), el('td', { class: 'num' }, String(r.count)),
      el('td', { class: 'num' }, triple(r.ttfb_ms)), el('td', { class: 'num' }, triple(r.total_ms)),
      el('td', { class: 'num' }, triple(r.upstream_ms)), el('td', { class: 'num' }, triple(r.overhead_ms)));
    body.append(tr);
  }
}

function refusals(chart, table, data) {
  chart.replaceChildren();
  const codes = Object.entries(data.by_code).sort((a, b) => b[1] - a[1]);
  if (!codes.length) {
    chart.append(el('p', { class: 'empty' }, 'No refusals since the gateway started.'));
  } else {
    const W = 520, rowH = 24, left = 230;
    const max = Math.max(...codes.map((c) => c[1]));
    const root = svg('svg', { viewBox: `0 0 ${W} ${codes.length * rowH + 4}`, role: 'img' });
    codes.forEach(([code, count], i) => {
      const y = i * rowH + 2;
      root.append(svg('text', { x: left - 8, y: y + 15, 'text-anchor': 'end', 'font-size': 12, fill: '#1c2430' }, code));
      const w = ((W - left - 50) * count) / max;
      const rect = svg('rect', { x: left, y: y + 3, width: Math.max(w, 1), height: rowH - 8, fill: COLORS[(i + 3) % COLORS.length], 'data-code': code, 'data-count': count });
      root.append(rect, svg('text', { x: left + w + 6, y: y + 15, 'font-size': 12, fill: '#6b7685' }, String(count)));
    });
    chart.append(root);
  }
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const r of data.recent.slice(0, 20)) {
    const tr = el('tr', { 'data-testid': 'refusal' });
    tr.append(el('td', {}, when(r.at)), el('td', {}, r.route), el('td', {}, String(r.status)), el('td', {}, r.code));
    body.append(tr);
  }
}

function text(testid, value) {
  const node = document.querySelector(`[data-testid="${testid}"]`);
  node.textContent = value;
  return node;
}

async function load() {
  const status = document.getElementById('status');
  try {
    const response = await fetch(`/api/dashboard?days=${range.days}&bucket=${range.bucket}`, { credentials: 'same-origin', cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    const rev = data.revenue;
    text('revenue-total', units(rev.total)).dataset.value = rev.total;
    text('revenue-charged', units(rev.charged)).dataset.value = rev.charged;
    text('revenue-session', units(rev.session_spent)).dataset.value = rev.session_spent;
    text('revenue-refunded', units(rev.refunded)).dataset.value = rev.refunded;
    const totals = data.channels.totals;
    text('settled-total', units(totals.settled_all_time)).dataset.value = totals.settled_all_time;
    text('exposure-total', units(totals.exposure)).dataset.value = totals.exposure;
    text('channels-open', String(totals.open)).dataset.value = String(totals.open);
    document.getElementById('lag').textContent = totals.settlement_lag_secs
      ? `oldest unsettled: ${totals.settlement_lag_secs} s` : 'nothing owed unsettled';
    stacked(document.getElementById('chart-model'), document.getElementById('legend-model'), rev.series, 'by_model', data.range.bucket_secs);
    stacked(document.getElementById('chart-route'), document.getElementById('legend-route'), rev.series, 'by_route', data.range.bucket_secs);
    ranked(document.getElementById('by-model'), rev.by_model, 'model-row');
    ranked(document.getElementById('by-route'), rev.by_route, 'route-row');
    channels(document.getElementById('channels'), data.channels.list);
    latency(document.getElementById('latency'), data.latency);
    refusals(document.getElementById('chart-refusals'), document.getElementById('refusals'), data.refusals);
    status.textContent = `updated ${when(data.generated_at)}`;
    status.dataset.ready = 'true';
  } catch (e) {
    status.textContent = `could not load: ${e.message}`;
  }
}

for (const button of document.querySelectorAll('#range button')) {
  button.addEventListener('click', () => {
    for (const b of document.querySelectorAll('#range button')) b.classList.toggle('on', b === button);
    range = { days: Number(button.dataset.days), bucket: button.dataset.bucket };
    load();
  });
}
load();
setInterval(load, 10000);
