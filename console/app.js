// The corefn console: a client of the control API (/_/api/v1/…) and the
// admin reads (/_/workers), nothing else. Plain DOM, no framework, no
// build step; text always goes in as text nodes, never as HTML.
'use strict';

const API = '/_/api/v1';
const KEY_STORAGE = 'corefn.key';
const KEY_ASKED_STORAGE = 'corefn.key-asked';
const POLL_MS = 2000;
const LOG_LINES_MAX = 500;
const SVG_NS = 'http://www.w3.org/2000/svg';

// What the current page started: stopped when another page opens.
let pageTimers = [];
let pageAborts = [];

// ---- DOM helpers ----------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'value') node.value = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  const view = document.getElementById('view');
  view.replaceChildren(...nodes);
}

function notice(text, ok) {
  const box = document.getElementById('notice');
  box.textContent = text;
  box.className = ok ? 'ok' : '';
  box.hidden = !text;
}

function ms(us) {
  if (us === undefined || us === null) return '–';
  const v = us / 1000;
  return v >= 100 ? v.toFixed(0) + ' ms' : v >= 10 ? v.toFixed(1) + ' ms' : v.toFixed(2) + ' ms';
}

function percent(rate) {
  return rate === undefined || rate === null ? '–' : (rate * 100).toFixed(rate > 0 && rate < 0.01 ? 2 : 1) + '%';
}

function when(unixSecs) {
  return unixSecs ? new Date(unixSecs * 1000).toLocaleString() : '–';
}

// ---- the API --------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : 'the server answered ' + status);
    this.status = status;
    this.code = error && error.code;
    this.diagnostics = error && error.diagnostics;
  }
}

function key() {
  return sessionStorage.getItem(KEY_STORAGE) || '';
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  if (key()) headers.set('Authorization', 'Bearer ' + key());
  return headers;
}

// One API call: the parsed JSON, or an ApiFailure with the server's
// message. A 401/403 asks for a key.
async function api(method, path, body, signal) {
  const headers = authHeaders();
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers.set('Content-Type', 'application/json');
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path.startsWith('/_/') ? path : API + path, init);
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = null; }
  if (!response.ok) {
    const failure = new ApiFailure(response.status, value && value.error);
    if (response.status === 401 || response.status === 403) askKey(failure.message);
    throw failure;
  }
  return value;
}

// Runs `load` now and every POLL_MS while the page is open; a failure is
// shown, and the next tick tries again.
function poll(load) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try { await load(); } catch (error) { if (error.name !== 'AbortError') notice(error.message); }
    running = false;
  };
  tick();
  pageTimers.push(setInterval(tick, POLL_MS));
}

// ---- the key --------------------------------------------------------

function showKeyState() {
  document.getElementById('key-button').textContent = key() ? 'API key: set' : 'API key: none';
}

function askKey(reason) {
  const dialog = document.getElementById('key-dialog');
  if (reason) document.getElementById('key-reason').textContent = reason;
  document.getElementById('key-input').value = key();
  if (!dialog.open) dialog.showModal();
}

function setupKey() {
  const dialog = document.getElementById('key-dialog');
  dialog.addEventListener('close', () => {
    sessionStorage.setItem(KEY_ASKED_STORAGE, '1');
    if (dialog.returnValue === 'save') {
      const value = document.getElementById('key-input').value.trim();
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
      notice(value ? 'Key saved for this tab.' : 'Key cleared.', true);
    }
    showKeyState();
  });
  document.getElementById('key-button').addEventListener('click', () => askKey());
  showKeyState();
  if (!key() && !sessionStorage.getItem(KEY_ASKED_STORAGE)) askKey();
}

// ---- routes of a function -------------------------------------------

// A route key `METHOD:/path` as a link when a browser can open it (a GET
// or ANY route; `/*` opens the path itself).
function routeLink(routeKey) {
  const colon = routeKey.indexOf(':');
  const method = routeKey.slice(0, colon);
  let path = routeKey.slice(colon + 1);
  if (path.endsWith('/*')) path = path.slice(0, -2) || '/';
  if ((method === 'GET' || method === 'ANY') && !path.includes('*') && !path.includes('{')) {
    return el('a', { href: path, target: '_blank', rel: 'noopener' }, routeKey);
  }
  return el('span', {}, routeKey);
}

// ---- functions ------------------------------------------------------

function functionsPage() {
  const body = el('tbody', { id: 'functions-body' });
  const table = el('table', { id: 'functions-table' },
    el('thead', {}, el('tr', {},
      el('th', {}, 'Name'), el('th', {}, 'Runtime'), el('th', {}, 'Live version'),
      el('th', {}, 'Routes'), el('th', { class: 'num' }, 'Calls (5 min)'),
      el('th', { class: 'num' }, 'Errors'), el('th', { class: 'num' }, 'p99'))),
    body);
  show(el('h1', {}, 'Functions'), table,
    el('p', { class: 'muted' }, 'Updated every 2 s. ', el('a', { href: '#/deploy' }, 'Deploy a function')));
  poll(async () => {
    const { functions } = await api('GET', '/functions');
    if (functions.length === 0) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 7, class: 'muted' },
        'Nothing deployed yet. ', el('a', { href: '#/deploy' }, 'Deploy one'), '.')));
      return;
    }
    body.replaceChildren(...functions.map((f) => {
      const recent = f.last_5m || {};
      const live = f.canary
        ? `v${f.live_version} (canary v${f.canary.version} at ${percent(f.canary.weight)})`
        : `v${f.live_version}`;
      return el('tr', { 'data-name': f.name },
        el('td', {}, el('a', { href: '#/functions/' + encodeURIComponent(f.name) }, f.name)),
        el('td', {}, f.runtime),
        el('td', {}, live),
        el('td', { class: 'routes' }, f.routes.map(routeLink)),
        el('td', { class: 'num' }, recent.count ?? 0),
        el('td', { class: 'num' + (recent.error_rate > 0 ? ' bad' : '') }, percent(recent.error_rate ?? 0)),
        el('td', { class: 'num' }, recent.p99_us ? ms(recent.p99_us) : '–'));
    }));
  });
}

// ---- deploy ---------------------------------------------------------

const RUNTIMES = ['python', 'node', 'php', 'wasm', 'exec', 'native'];

function lines(text) {
  return text.split('\n').map((l) => l.trim()).filter((l) => l);
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(',') + 1));
    };
    reader.onerror = () => reject(new Error('cannot read ' + file.name));
    reader.readAsDataURL(file);
  });
}

function deployPage() {
  const field = (label, input) => [el('label', { for: input.id }, label), input];
  const name = el('input', { id: 'deploy-name', type: 'text', required: true, pattern: '[a-z0-9][a-z0-9\\-]{0,62}',
    placeholder: 'greet' });
  const runtime = el('select', { id: 'deploy-runtime' }, RUNTIMES.map((r) => el('option', { value: r }, r)));
  const file = el('input', { id: 'deploy-file', type: 'file' });
  const code = el('textarea', { id: 'deploy-code', rows: 12, spellcheck: 'false',
    placeholder: "def handle(request):\n    return (200, {'content-type': 'text/plain'}, 'Hello!\\n')" });
  const routes = el('textarea', { id: 'deploy-routes', rows: 2, placeholder: 'GET:/hello (one per line; /fn/NAME always works)' });
  const env = el('textarea', { id: 'deploy-env', rows: 2, placeholder: 'GREETING=Hello (one per line)' });
  const timeout = el('input', { id: 'deploy-timeout', type: 'number', min: 1, placeholder: 'default' });
  const memory = el('input', { id: 'deploy-memory', type: 'number', min: 1, placeholder: 'default' });
  const auth = el('select', { id: 'deploy-auth' }, el('option', { value: 'public' }, 'public'),
    el('option', { value: 'key' }, 'key (callers need an invoke key)'));
  const result = el('div', { id: 'deploy-result' });
  const submit = el('button', { id: 'deploy-submit', type: 'submit' }, 'Deploy');
  const form = el('form', { id: 'deploy-form', class: 'grid' },
    field('Name', name), field('Runtime', runtime), field('Code file', file),
    field('…or code', code), field('Routes', routes), field('Environment', env),
    field('Timeout (ms)', timeout), field('Memory (MiB)', memory), field('Auth', auth),
    el('span'), el('div', {}, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const deploy = { name: name.value.trim(), runtime: runtime.value };
    try {
      if (file.files.length > 0) {
        deploy.code_base64 = await readBase64(file.files[0]);
        deploy.filename = file.files[0].name;
      } else {
        deploy.code = code.value;
      }
      if (lines(routes.value).length) deploy.routes = lines(routes.value);
      const config = {};
      const vars = lines(env.value);
      if (vars.length) {
        config.env = {};
        for (const line of vars) {
          const eq = line.indexOf('=');
          if (eq < 1) throw new Error(`environment line "${line}" is not K=V`);
          config.env[line.slice(0, eq)] = line.slice(eq + 1);
        }
      }
      if (timeout.value) config.timeout_ms = Number(timeout.value);
      if (memory.value) config.memory_mb = Number(memory.value);
      if (auth.value === 'key') config.auth = 'key';
      if (Object.keys(config).length) deploy.config = config;
    } catch (error) {
      result.replaceChildren(el('p', { class: 'bad', id: 'deploy-error' }, error.message));
      return;
    }
    submit.disabled = true;
    result.replaceChildren(el('p', { class: 'muted' }, 'Uploading and compiling…'));
    try {
      const done = await api('POST', '/functions', deploy);
      const hostUrl = `${location.protocol}//${done.name}.localhost${location.port ? ':' + location.port : ''}/`;
      result.replaceChildren(el('p', { class: 'good', id: 'deploy-success' },
        `Live (version ${done.version}) at `, el('a', { href: done.url_path, id: 'deploy-url' }, location.origin + done.url_path),
        ' and ', el('a', { href: hostUrl }, hostUrl), '. ',
        el('a', { href: '#/functions/' + encodeURIComponent(done.name) }, 'Open the function')));
    } catch (error) {
      const parts = [el('p', { class: 'bad', id: 'deploy-error' }, `Deploy failed (${error.status || 'error'}): ${error.message}`)];
      if (error.diagnostics) parts.push(el('pre', { id: 'deploy-diagnostics' }, error.diagnostics));
      result.replaceChildren(...parts);
    } finally {
      submit.disabled = false;
    }
  });
  show(el('h1', {}, 'Deploy a function'),
    el('section', { class: 'card' }, form),
    result);
}

// ---- one function ---------------------------------------------------

function functionPage(name) {
  const path = '/functions/' + encodeURIComponent(name);
  const summary = el('div', { id: 'function-summary' }, 'Loading…');
  const figures = el('div', { class: 'figures', id: 'function-figures' });
  const versionsBody = el('tbody', { id: 'versions-body' });
  const canaryVersion = el('input', { id: 'canary-version', type: 'number', min: 1, placeholder: 'version' });
  const canaryWeight = el('input', { id: 'canary-weight', type: 'number', min: 0, max: 1, step: 0.01, value: '0.1' });
  const overTime = el('div', { id: 'latency-chart' });
  const curve = el('div', { id: 'percentile-chart' });
  const logTail = el('pre', { class: 'log', id: 'log-tail' });
  let live = null;

  const invoke = invokeForm(name);
  show(
    el('h1', {}, name),
    el('section', { class: 'card' }, summary, figures),
    el('div', { class: 'row' },
      el('section', { class: 'card' }, el('h2', {}, 'Invoke'), invoke)),
    el('section', { class: 'card' },
      el('h2', {}, 'Versions'),
      el('table', { id: 'versions-table' }, el('thead', {}, el('tr', {},
        el('th', {}, 'Version'), el('th', {}, 'Created'), el('th', {}, 'Runtime'),
        el('th', {}, 'Artifact'), el('th', {}, 'Serving'), el('th', {}, ''))), versionsBody),
      el('h2', {}, 'Canary'),
      el('div', { class: 'row' }, canaryVersion, canaryWeight,
        el('div', {},
          el('button', { id: 'canary-set', type: 'button', onclick: () => setCanary(true) }, 'Send this share to it'), ' ',
          el('button', { id: 'canary-clear', type: 'button', class: 'secondary', onclick: () => setCanary(false) }, 'No canary')))),
    el('div', { class: 'row' },
      el('section', { class: 'card' }, el('h2', {}, 'Latency over the last 5 minutes'), overTime,
        el('div', { class: 'legend' }, el('span', { class: 'p50' }, '— p50'), el('span', { class: 'p99' }, '— p99'))),
      el('section', { class: 'card' }, el('h2', {}, 'Latency by percentile (5 min)'), curve)),
    el('section', { class: 'card' }, el('h2', {}, 'Live log'), logTail));

  async function setCanary(on) {
    if (!live) return;
    const body = { version: live.live_version, canary: null };
    if (on) body.canary = { version: Number(canaryVersion.value), weight: Number(canaryWeight.value) };
    try {
      await api('PUT', path + '/aliases/live', body);
      notice(on ? `Canary: v${body.canary.version} gets ${percent(body.canary.weight)} of the calls.` : 'Canary cleared.', true);
      await loadVersions();
    } catch (error) { notice(error.message); }
  }

  async function rollback(version) {
    try {
      const done = await api('POST', path + '/rollback', { version });
      notice(`Rolled back: v${done.live_version} is live.`, true);
      await loadVersions();
    } catch (error) { notice(error.message); }
  }

  async function loadVersions() {
    const [info, { versions }] = await Promise.all([api('GET', path), api('GET', path + '/versions')]);
    live = info;
    summary.replaceChildren(
      el('p', {}, `${info.runtime}, live version `, el('b', { id: 'live-version' }, `v${info.live_version}`),
        info.canary ? ` with canary v${info.canary.version} at ${percent(info.canary.weight)}` : '',
        `, latest v${info.latest_version}, updated ${when(info.updated)}.`),
      el('p', { class: 'routes' }, 'Routes: ', info.routes.map(routeLink)));
    versionsBody.replaceChildren(...versions.slice().reverse().map((v) => {
      const serving = v.version === info.live_version ? 'live'
        : info.canary && info.canary.version === v.version ? `canary ${percent(info.canary.weight)}` : '';
      return el('tr', { 'data-version': v.version },
        el('td', {}, `v${v.version}`), el('td', {}, when(v.created)), el('td', {}, v.runtime),
        el('td', {}, el('code', {}, v.artifact_sha256.slice(0, 12))),
        el('td', {}, serving),
        el('td', {}, v.version === info.live_version ? '' : el('button', {
          type: 'button', class: 'secondary rollback', 'data-version': v.version,
          onclick: () => rollback(v.version),
        }, `Roll back to v${v.version}`)));
    }));
  }

  async function loadStats() {
    const stats = await api('GET', path + '/stats?window=5m&series=1');
    const lat = stats.latency_us || {};
    figures.replaceChildren(
      ...[['Calls', stats.count ?? 0], ['Per second', (stats.rps ?? 0).toFixed(2)],
        ['Errors', percent(stats.error_rate ?? 0)], ['p50', ms(lat.p50)], ['p99', ms(lat.p99)],
        ['Cold starts', stats.cold_starts ?? 0]]
        .map(([label, value]) => el('div', {}, el('span', { class: 'muted' }, label), el('b', {}, value))));
    overTime.replaceChildren(timeChart(stats.series || []));
    curve.replaceChildren(percentileChart(stats.percentiles || []));
  }

  poll(loadVersions);
  poll(loadStats);
  followLogs(path + '/logs?follow=1&tail=50', logTail);
}

function invokeForm(name) {
  const method = el('select', { id: 'invoke-method' },
    ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].map((m) => el('option', { value: m }, m)));
  const target = el('input', { id: 'invoke-path', type: 'text', value: `/fn/${name}` });
  const headers = el('textarea', { id: 'invoke-headers', rows: 2, placeholder: 'Content-Type: application/json' });
  const body = el('textarea', { id: 'invoke-body', rows: 4, placeholder: '{"name": "World"}' });
  const out = el('div', { id: 'invoke-result' });
  const form = el('form', { id: 'invoke-form', class: 'grid' },
    el('label', { for: 'invoke-method' }, 'Method'), method,
    el('label', { for: 'invoke-path' }, 'Path'), target,
    el('label', { for: 'invoke-headers' }, 'Headers'), headers,
    el('label', { for: 'invoke-body' }, 'Body'), body,
    el('span'), el('div', {}, el('button', { id: 'invoke-send', type: 'submit' }, 'Send')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const sent = authHeaders();
    for (const line of lines(headers.value)) {
      const colon = line.indexOf(':');
      if (colon < 1) { out.replaceChildren(el('p', { class: 'bad' }, `header line "${line}" is not Name: value`)); return; }
      sent.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const init = { method: method.value, headers: sent };
    if (!['GET', 'HEAD'].includes(method.value) && body.value) init.body = body.value;
    const started = performance.now();
    try {
      const response = await fetch(target.value, init);
      const text = await response.text();
      const took = performance.now() - started;
      const headerLines = [];
      response.headers.forEach((value, header) => headerLines.push(`${header}: ${value}`));
      out.replaceChildren(
        el('p', { id: 'invoke-status', class: response.ok ? 'good' : 'bad' },
          `${response.status} ${response.statusText}`, el('span', { class: 'muted' }, ` in ${took.toFixed(1)} ms`)),
        el('pre', { id: 'invoke-response-headers' }, headerLines.join('\n')),
        el('pre', { id: 'invoke-response-body' }, text));
    } catch (error) {
      out.replaceChildren(el('p', { class: 'bad', id: 'invoke-status' }, `no answer: ${error.message}`));
    }
  });
  return el('div', {}, form, out);
}

// The log stream (NDJSON, chunked) into `into`, newest last, until the
// page changes.
function followLogs(path, into) {
  const abort = new AbortController();
  pageAborts.push(abort);
  const append = (line) => {
    let entry;
    try { entry = JSON.parse(line); } catch (_) { return; }
    const text = `${entry.ts || ''} v${entry.version ?? '-'} ${entry.stream || ''} ${entry.request_id || ''} ${entry.text || ''}`;
    into.append(document.createTextNode(text + '\n'));
    while (into.childNodes.length > LOG_LINES_MAX) into.firstChild.remove();
    into.scrollTop = into.scrollHeight;
  };
  (async () => {
    const response = await fetch(API + path, { headers: authHeaders(), signal: abort.signal });
    if (!response.ok) { into.textContent = `the log is not readable here (${response.status})`; return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = pending.indexOf('\n')) >= 0) {
        append(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    }
    into.append(document.createTextNode('(the log stream ended)\n'));
  })().catch((error) => {
    if (error.name !== 'AbortError') into.append(document.createTextNode(`(log stream: ${error.message})\n`));
  });
}

// ---- charts (SVG) ---------------------------------------------------

const CHART = { width: 560, height: 220, left: 56, right: 12, top: 12, bottom: 28 };

function chartFrame(yMaxUs, xTicks) {
  const { width, height, left, right, top, bottom } = CHART;
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const plotH = height - top - bottom;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    root.append(svg('line', { class: 'axis', x1: left, x2: width - right, y1: y, y2: y }));
    root.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, ms((yMaxUs * i) / 4)));
  }
  for (const [x, label] of xTicks) {
    root.append(svg('text', { x, y: height - 8, 'text-anchor': 'middle' }, label));
  }
  return root;
}

function niceMax(us) {
  if (us <= 0) return 1000;
  const step = Math.pow(10, Math.floor(Math.log10(us)));
  return Math.ceil(us / step) * step;
}

// p50 and p99 of each step of the series over the last 5 minutes.
function timeChart(series) {
  const { width, height, left, right, top, bottom } = CHART;
  const spanMs = 5 * 60 * 1000;
  const end = Date.now();
  const x = (t) => left + ((t - (end - spanMs)) / spanMs) * (width - left - right);
  const yMax = niceMax(Math.max(0, ...series.map((s) => s.p99_us)));
  const y = (us) => top + (height - top - bottom) * (1 - us / yMax);
  const ticks = [5, 4, 3, 2, 1, 0].map((m) => [x(end - m * 60000), m ? `-${m} min` : 'now']);
  const root = chartFrame(yMax, ticks);
  if (series.length === 0) {
    root.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'no calls in the last 5 minutes'));
    return root;
  }
  for (const [field, cls] of [['p50_us', 'p50'], ['p99_us', 'p99']]) {
    const points = series.map((s) => `${x(s.t_ms).toFixed(1)},${y(s[field]).toFixed(1)}`).join(' ');
    root.append(svg('polyline', { class: cls, points }));
    for (const s of series) {
      root.append(svg('circle', { cx: x(s.t_ms).toFixed(1), cy: y(s[field]).toFixed(1), r: 2.5, class: cls },
        svg('title', {}, `${new Date(s.t_ms).toLocaleTimeString()}: ${s.count} calls, ${field.slice(0, 3)} ${ms(s[field])}`)));
    }
  }
  return root;
}

// The latency at each percentile, on a "nines" axis (90, 99, 99.9 evenly
// spaced), as HdrHistogram plots it.
function percentileChart(points) {
  const { width, height, left, right, top, bottom } = CHART;
  const ninesMax = 4; // 99.99%: where the maximum is drawn
  const nines = (q) => Math.min(-Math.log10(Math.max(1 - q, 1e-12)), ninesMax);
  const x = (q) => left + (nines(q) / ninesMax) * (width - left - right);
  const yMax = niceMax(Math.max(0, ...points.map((p) => p.us)));
  const y = (us) => top + (height - top - bottom) * (1 - us / yMax);
  const ticks = [[0, '0%'], [0.9, '90%'], [0.99, '99%'], [0.999, '99.9%'], [1, 'max']].map(([q, l]) => [x(q), l]);
  const root = chartFrame(yMax, ticks);
  if (points.every((p) => p.us === 0)) {
    root.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'no calls in the last 5 minutes'));
    return root;
  }
  const line = points.map((p) => `${x(p.q).toFixed(1)},${y(p.us).toFixed(1)}`).join(' ');
  root.append(svg('polyline', { class: 'p99', points: line }));
  for (const p of points) {
    root.append(svg('circle', { cx: x(p.q).toFixed(1), cy: y(p.us).toFixed(1), r: 2.5, class: 'p99' },
      svg('title', {}, `p${(p.q * 100).toFixed(1)}: ${ms(p.us)}`)));
  }
  return root;
}

// ---- workers --------------------------------------------------------

function workersPage() {
  const body = el('tbody', { id: 'workers-body' });
  const caption = el('p', { class: 'muted', id: 'workers-caption' });
  const figure = (f, field) => (f && f[field] !== undefined ? f[field].toFixed(3) : '–');
  show(el('h1', {}, 'Workers'), caption,
    el('table', { id: 'workers-table' }, el('thead', {}, el('tr', {},
      el('th', {}, 'Worker'), el('th', {}, 'PID'), el('th', {}, 'State'), el('th', { class: 'num' }, 'Restarts'),
      el('th', { class: 'num' }, 'Score'), el('th', { class: 'num' }, 'CPU'), el('th', { class: 'num' }, 'Memory'),
      el('th', { class: 'num' }, 'I/O'), el('th', { class: 'num' }, 'In flight'), el('th', { class: 'num' }, 'Served'),
      el('th', { class: 'num' }, 'Last report'))), body),
    el('p', { class: 'muted' }, 'CPU, memory and I/O are the smoothed figures normalised to 0..1; the score is ',
      el('code', {}, '0.5·cpu + 0.3·mem + 0.2·io'), ' (lower is chosen first). Updated every 2 s.'));
  poll(async () => {
    const view = await api('GET', '/_/workers');
    caption.textContent = `As core ${view.core} sees them; ${view.datagrams_received} metric datagrams received, ${view.datagrams_rejected} rejected.`;
    if (view.workers.length === 0) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 11, class: 'muted' }, 'This gateway runs no workers (--workers 0).')));
      return;
    }
    body.replaceChildren(...view.workers.map((w) => el('tr', { 'data-worker': w.id },
      el('td', {}, w.id), el('td', {}, w.pid ?? '–'), el('td', {}, w.state),
      el('td', { class: 'num' }, w.restarts), el('td', { class: 'num' }, w.score === null ? '–' : w.score.toFixed(3)),
      el('td', { class: 'num' }, figure(w.normalised, 'cpu')), el('td', { class: 'num' }, figure(w.normalised, 'mem')),
      el('td', { class: 'num' }, figure(w.normalised, 'io')), el('td', { class: 'num' }, w.in_flight),
      el('td', { class: 'num' }, w.requests_served ?? '–'),
      el('td', { class: 'num' }, w.last_report_ms_ago === null ? '–' : `${w.last_report_ms_ago} ms ago`))));
  });
}

// ---- the router -----------------------------------------------------

function route() {
  for (const timer of pageTimers) clearInterval(timer);
  for (const abort of pageAborts) abort.abort();
  pageTimers = [];
  pageAborts = [];
  notice('');
  let hash = location.hash.replace(/^#/, '');
  // GET /upload is the deploy page.
  if (!hash && location.pathname === '/upload') hash = '/deploy';
  const parts = hash.split('/').filter((p) => p);
  const page = parts[0] || 'functions';
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('active', link.dataset.nav === page);
  }
  document.body.dataset.page = page;
  if (page === 'deploy') deployPage();
  else if (page === 'workers') workersPage();
  else if (page === 'functions' && parts[1]) functionPage(decodeURIComponent(parts[1]));
  else functionsPage();
}

window.addEventListener('hashchange', route);
setupKey();
route();
