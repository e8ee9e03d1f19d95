// plantd dashboard: plain JavaScript, no dependencies, served by the proxy.
//
// The session lives in an HttpOnly cookie the page never sees; every POST carries the CSRF token
// from /dashboard/api/session in X-CSRF-Token. The overview and workers pages render the
// snapshots the proxy pushes over SSE (/dashboard/api/live); the other pages call
// /dashboard/api/{state,logger,audit}/... on the user's behalf and show the services' answers,
// refusals included.
'use strict';

(function () {
  const PAGES = ['overview', 'workers', 'metrics', 'state', 'events'];
  const COLORS = ['#1f6f43', '#1d4ed8', '#b45309', '#9d174d', '#0f766e', '#6d28d9', '#4d7c0f', '#be123c'];
  const TAIL_MAX = 100;
  const SVG = 'http://www.w3.org/2000/svg';

  let session = null;
  let live = null;
  let snapshot = null;
  let tails = [];
  let metricsTimer = null;
  let selectedScope = null;

  const $ = (id) => document.getElementById(id);

  // An element with attributes and children (strings become text nodes; never HTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function message(id, text, kind, code) {
    const node = $(id);
    node.textContent = text || '';
    node.classList.remove('error', 'ok');
    if (kind) node.classList.add(kind);
    if (code) node.dataset.code = code; else delete node.dataset.code;
    node.hidden = !text && id === 'login-error';
  }

  function errorOf(result) {
    const error = result.json && result.json.error;
    if (error) return { code: error.code || 'ERROR', text: (error.code || 'ERROR') + ': ' + (error.message || '') };
    return { code: 'HTTP_' + result.status, text: 'request failed (HTTP ' + result.status + ')' };
  }

  // POST a dashboard call; resolves to {status, ok, json}. A 401 ends the page's session.
  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': session ? session.csrf_token : '' },
        body: JSON.stringify(body || {}),
      });
    } catch (e) {
      return { status: 0, ok: false, json: { error: { code: 'NETWORK', message: 'the proxy does not answer' } } };
    }
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    if (response.status === 401 && session && path !== '/dashboard/api/login') {
      loggedOut('Your session has ended: log in again.');
    }
    return { status: response.status, ok: response.ok && !!json && json.success !== false, json };
  }

  // --- permissions (the SDK's rule: equal, system:admin, or a wildcard prefix) ---
  function granted(permission) {
    if (!session) return false;
    return session.permissions.some((p) => p === permission || p === 'system:admin' ||
      (p.endsWith(':*') && permission.startsWith(p.slice(0, -1))));
  }

  // --- login / logout ---
  async function login(event) {
    event.preventDefault();
    message('login-error', '');
    $('login-submit').disabled = true;
    const result = await post('/dashboard/api/login', {
      identifier: $('login-identifier').value,
      password: $('login-password').value,
    });
    $('login-submit').disabled = false;
    if (!result.ok) {
      message('login-error', errorOf(result).text, 'error', errorOf(result).code);
      return;
    }
    $('login-password').value = '';
    loggedIn(result.json.data);
  }

  function loggedIn(data) {
    session = data;
    $('whoami').textContent = data.username;
    $('topbar').hidden = false;
    startLive();
    if (!PAGES.includes(location.hash.slice(1))) location.hash = '#overview';
    route();
  }

  function loggedOut(text) {
    session = null;
    if (live) { live.close(); live = null; }
    stopPage();
    snapshot = null;
    $('topbar').hidden = true;
    showOnly('login');
    message('login-error', text || '', text ? 'error' : null);
    $('login-identifier').focus();
  }

  async function logout() {
    await post('/dashboard/api/logout', {});
    loggedOut('');
  }

  // --- pages ---
  function showOnly(name) {
    for (const page of ['login'].concat(PAGES)) $('page-' + page).hidden = page !== name;
    for (const link of document.querySelectorAll('#nav a')) {
      if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.body.dataset.page = name;
  }

  function stopPage() {
    for (const source of tails) source.close();
    tails = [];
    if (metricsTimer) { clearInterval(metricsTimer); metricsTimer = null; }
  }

  function route() {
    if (!session) { showOnly('login'); return; }
    let page = location.hash.slice(1);
    if (!PAGES.includes(page)) page = 'overview';
    stopPage();
    showOnly(page);
    if (page === 'overview' || page === 'workers') render();
    if (page === 'metrics') openMetrics();
    if (page === 'state') loadScopes();
    if (page === 'events') openEvents();
  }

  // --- live snapshots ---
  function startLive() {
    if (live) live.close();
    live = new EventSource('/dashboard/api/live');
    live.addEventListener('snapshot', (event) => {
      snapshot = JSON.parse(event.data);
      render();
    });
    live.addEventListener('error', () => {
      $('live-status').textContent = 'Reconnecting to the proxy…';
    });
  }

  function render() {
    if (!snapshot || !snapshot.ready) return;
    $('main').dataset.ready = 'true';
    renderOverview();
    renderWorkers();
  }

  function fmt(n) {
    if (typeof n !== 'number') return '–';
    return Math.abs(n) >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString('en') : n.toFixed(2);
  }

  function duration(secs) {
    secs = Math.floor(secs || 0);
    const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (secs % 60) + 's';
  }

  function visibleServices() {
    return (snapshot.services || []).filter((s) => s.workers > 0 || s.queued > 0);
  }

  function renderOverview() {
    const b = snapshot.broker;
    const status = $('live-status');
    status.textContent = snapshot.error ? 'Broker unreachable: ' + snapshot.error
      : 'Live · updated ' + new Date(snapshot.time_ms).toLocaleTimeString();
    status.classList.toggle('error', !!snapshot.error);
    const cards = $('broker-cards');
    cards.replaceChildren();
    if (b) {
      const errors = Object.values(b.counters.error_replies || {}).reduce((a, c) => a + c, 0);
      for (const [label, value, id] of [
        ['Version', b.version, 'version'], ['Uptime', duration(b.uptime_secs), 'uptime'],
        ['Services', fmt(b.services), 'services'], ['Workers', fmt(b.workers), 'workers'],
        ['Queued', fmt(b.queued), 'queued'], ['In flight', fmt(b.in_flight), 'in-flight'],
        ['Requests', fmt(b.counters.requests), 'requests'], ['Errors', fmt(errors), 'errors'],
      ]) {
        cards.append(el('div', { class: 'card', 'data-card': id },
          el('div', { class: 'label', text: label }), el('div', { class: 'value', text: value })));
      }
    }
    const body = $('services-body');
    body.replaceChildren();
    for (const s of visibleServices()) {
      body.append(el('tr', { 'data-service': s.name },
        el('th', { scope: 'row', text: s.name }),
        el('td', { class: 'num workers', 'data-workers': s.workers, text: s.workers }),
        el('td', { class: 'num', text: s.idle }),
        el('td', { class: 'num queued', text: s.queued }),
        el('td', { class: 'num', text: fmt(s.requests) })));
    }
    const health = $('health-body');
    health.replaceChildren();
    for (const p of snapshot.health || []) {
      const checks = p.checks && typeof p.checks === 'object'
        ? Object.entries(p.checks).map(([name, c]) => name + ': ' + ((c && c.status) || c)).join(', ')
        : (p.error || '');
      health.append(el('tr', { 'data-process': p.name },
        el('th', { scope: 'row', text: p.name }),
        el('td', { class: 'status-' + p.status, text: p.status }),
        el('td', { text: checks })));
    }
    const counters = $('counters');
    counters.replaceChildren();
    if (b) {
      for (const [name, value] of Object.entries(b.counters)) {
        if (typeof value !== 'number') continue;
        counters.append(el('div', {}, el('dt', { text: name.replace(/_/g, ' ') }), el('dd', { text: fmt(value) })));
      }
    }
    drawThroughput(snapshot.throughput || [], snapshot.time_ms);
  }

  function axes(chart, width, height, pad, max, ticksY, labelY) {
    chart.append(svg('line', { class: 'axis', x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
    chart.append(svg('line', { class: 'axis', x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b }));
    for (let i = 0; i <= ticksY; i++) {
      const value = max * i / ticksY;
      const y = height - pad.b - (height - pad.t - pad.b) * i / ticksY;
      const text = svg('text', { class: 'tick', x: pad.l - 4, y: y + 3, 'text-anchor': 'end' });
      text.textContent = labelY(value);
      chart.append(text);
    }
  }

  function drawThroughput(points, now) {
    const chart = $('throughput-chart');
    const width = 600, height = 180, pad = { l: 44, r: 8, t: 8, b: 20 };
    chart.replaceChildren();
    const span = 600000;
    const start = now - span;
    const max = Math.max(1, ...points.map((p) => p[1])) * 1.1;
    axes(chart, width, height, pad, max, 4, (v) => fmt(v));
    for (const [label, t] of [['-10 min', start], ['-5 min', start + span / 2], ['now', now]]) {
      const x = pad.l + (width - pad.l - pad.r) * (t - start) / span;
      const text = svg('text', { class: 'tick', x, y: height - 5, 'text-anchor': 'middle' });
      text.textContent = label;
      chart.append(text);
    }
    const xy = points.filter((p) => p[0] >= start).map(([t, v]) => [
      pad.l + (width - pad.l - pad.r) * (t - start) / span,
      height - pad.b - (height - pad.t - pad.b) * v / max,
    ]);
    if (xy.length > 1) {
      const line = xy.map(([x, y]) => x.toFixed(1) + ',' + y.toFixed(1)).join(' ');
      const base = height - pad.b;
      chart.append(svg('polygon', { class: 'area', points: xy[0][0].toFixed(1) + ',' + base + ' ' + line + ' ' + xy[xy.length - 1][0].toFixed(1) + ',' + base }));
      chart.append(svg('polyline', { class: 'line', points: line }));
    }
    const values = points.map((p) => p[1]);
    chart.dataset.points = String(points.length);
    chart.dataset.max = String(values.length ? Math.max(...values) : 0);
    chart.dataset.nonzero = String(values.filter((v) => v > 0).length);
    chart.dataset.last = String(values.length ? values[values.length - 1] : 0);
  }

  function renderWorkers() {
    const list = $('workers-list');
    list.replaceChildren();
    const services = visibleServices();
    if (!services.length) list.append(el('p', { class: 'muted', text: 'No workers are registered.' }));
    for (const s of services) {
      const rows = (s.workers_list || []).map((w) => el('tr', { 'data-worker': w.id },
        el('td', { text: w.id }), el('td', { text: w.dialect }), el('td', { text: w.state }),
        el('td', { class: 'num', text: w.credit }), el('td', { class: 'num', text: w.in_flight }),
        el('td', { class: 'num', text: fmt(w.requests) }),
        el('td', { class: 'num', text: (w.last_seen_ms_ago / 1000).toFixed(1) + ' s ago' })));
      list.append(el('div', { class: 'workers-service', 'data-service': s.name },
        el('h2', { text: s.name + ' (' + s.workers + ')' }),
        el('div', { class: 'scroll' }, el('table', {},
          el('thead', {}, el('tr', {}, ...['Worker', 'Dialect', 'State', 'Credit', 'In flight', 'Requests', 'Last seen']
            .map((h) => el('th', { scope: 'col', text: h })))),
          el('tbody', {}, ...rows)))));
    }
  }

  // --- bus tails ---
  function tail(bus, prefix, listId, describe) {
    const source = new EventSource('/api/v1/buses/' + bus + '?prefix=' + encodeURIComponent(prefix || ''));
    source.addEventListener('message', (event) => {
      const message = JSON.parse(event.data);
      const list = $(listId);
      list.prepend(el('li', { 'data-topic': message.topic },
        el('span', { class: 'topic', text: message.topic }), ' ', describe(message.payload)));
      while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
    });
    tails.push(source);
  }

  // --- metrics ---
  function openMetrics() {
    $('metrics-tail').replaceChildren();
    tail('metric', $('metrics-prefix').value, 'metrics-tail', (p) =>
      p && typeof p.value === 'number' ? fmt(p.value) + (p.units ? ' ' + p.units : '') : JSON.stringify(p));
    loadMetrics();
    metricsTimer = setInterval(loadMetrics, 5000);
  }

  async function loadMetrics(event) {
    if (event) {
      event.preventDefault();
      // A new prefix: a new tail.
      stopPage();
      openMetrics();
      return;
    }
    const windowSecs = Number($('metrics-window').value);
    const bucket = Math.max(1, Math.round(windowSecs / 60));
    const result = await post('/dashboard/api/logger/metrics-summary', {
      topic_prefix: $('metrics-prefix').value, since: '-' + windowSecs + 's', bucket,
    });
    if (!result.ok) {
      const e = errorOf(result);
      message('metrics-message', e.text, 'error', e.code);
      return;
    }
    const series = (result.json.data.series || []).slice(0, COLORS.length);
    message('metrics-message', series.length ? '' : 'No readings under this prefix in the window.');
    drawMetrics(series, windowSecs);
  }

  function drawMetrics(series, windowSecs) {
    const chart = $('metrics-chart');
    const legend = $('metrics-legend');
    const width = 600, height = 240, pad = { l: 52, r: 8, t: 8, b: 20 };
    chart.replaceChildren();
    legend.replaceChildren();
    const now = Date.now(), start = now - windowSecs * 1000;
    const all = series.flatMap((s) => s.buckets.filter((b) => b.count > 0));
    let lo = Math.min(...all.map((b) => b.min)), hi = Math.max(...all.map((b) => b.max));
    if (!all.length) { lo = 0; hi = 1; }
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (t) => pad.l + (width - pad.l - pad.r) * (t - start) / (now - start);
    const y = (v) => height - pad.b - (height - pad.t - pad.b) * (v - lo) / (hi - lo);
    axes(chart, width, height, pad, hi - lo, 4, (v) => fmt(lo + v));
    let points = 0;
    series.forEach((s, i) => {
      const color = COLORS[i];
      const buckets = s.buckets.filter((b) => b.count > 0)
        .map((b) => ({ t: Date.parse(b.start), min: b.min, max: b.max, avg: b.avg }))
        .filter((b) => b.t >= start - windowSecs * 1000);
      if (buckets.length > 1) {
        const band = buckets.map((b) => x(b.t).toFixed(1) + ',' + y(b.max).toFixed(1))
          .concat(buckets.slice().reverse().map((b) => x(b.t).toFixed(1) + ',' + y(b.min).toFixed(1)));
        chart.append(svg('polygon', { points: band.join(' '), fill: color, 'fill-opacity': 0.15 }));
        chart.append(svg('polyline', { points: buckets.map((b) => x(b.t).toFixed(1) + ',' + y(b.avg).toFixed(1)).join(' '), fill: 'none', stroke: color, 'stroke-width': 2 }));
      }
      for (const b of buckets) {
        const dot = svg('circle', { class: 'point', cx: x(b.t).toFixed(1), cy: y(b.avg).toFixed(1), r: 3, fill: color, 'data-topic': s.topic });
        const title = svg('title', {});
        title.textContent = s.topic + ' ' + new Date(b.t).toLocaleTimeString() + ': avg ' + fmt(b.avg) + ' (min ' + fmt(b.min) + ', max ' + fmt(b.max) + ')';
        dot.append(title);
        chart.append(dot);
        points++;
      }
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = color;
      legend.append(el('li', { 'data-topic': s.topic }, swatch, s.topic));
    });
    chart.dataset.points = String(points);
  }

  // --- state ---
  function stateError(result) {
    const e = errorOf(result);
    message('state-message', e.text, 'error', e.code);
  }

  async function loadScopes() {
    const result = await post('/dashboard/api/state/list-scopes', {});
    const list = $('scope-list');
    list.replaceChildren();
    if (!result.ok) { stateError(result); return; }
    for (const scope of result.json.data.scopes) {
      list.append(el('li', {}, el('button', {
        type: 'button', 'data-scope': scope, 'aria-pressed': scope === selectedScope ? 'true' : 'false',
        text: scope, onclick: () => selectScope(scope),
      })));
    }
    if (selectedScope && result.json.data.scopes.includes(selectedScope)) await loadKeys(selectedScope);
    else { selectedScope = null; $('key-list').replaceChildren(); $('scope-delete').hidden = true; $('keys-title').textContent = 'Keys'; }
  }

  async function selectScope(scope) {
    selectedScope = scope;
    $('state-scope').value = scope;
    for (const b of document.querySelectorAll('#scope-list button')) b.setAttribute('aria-pressed', b.dataset.scope === scope ? 'true' : 'false');
    await loadKeys(scope);
  }

  async function loadKeys(scope) {
    $('keys-title').textContent = 'Keys in ' + scope;
    $('scope-delete').hidden = false;
    const result = await post('/dashboard/api/state/list-keys', { service: scope });
    const list = $('key-list');
    list.replaceChildren();
    if (!result.ok) { stateError(result); return; }
    for (const key of result.json.data.keys) {
      list.append(el('li', {}, el('button', { type: 'button', 'data-key': key, text: key, onclick: () => showKey(scope, key) })));
    }
    if (!result.json.data.keys.length) list.append(el('li', { class: 'muted', text: 'No keys.' }));
  }

  async function showKey(scope, key) {
    const result = await post('/dashboard/api/state/state-get', { service: scope, key });
    if (!result.ok) { stateError(result); return; }
    const text = JSON.stringify(result.json.data.value, null, 2);
    const view = $('state-value-view');
    view.textContent = text;
    view.dataset.scope = scope;
    view.dataset.key = key;
    $('state-scope').value = scope;
    $('state-key').value = key;
    $('state-value').value = text;
    message('state-message', '');
  }

  async function setKey(event) {
    event.preventDefault();
    const scope = $('state-scope').value.trim(), key = $('state-key').value;
    let value;
    try { value = JSON.parse($('state-value').value); } catch (e) {
      message('state-message', 'The value is not JSON (write strings in quotes): ' + e.message, 'error', 'NOT_JSON');
      return;
    }
    const result = await post('/dashboard/api/state/state-set', { service: scope, key, value });
    if (!result.ok) { stateError(result); return; }
    message('state-message', 'Set ' + key + ' in ' + scope + '.', 'ok', 'SET');
    selectedScope = scope;
    await loadScopes();
    await showKey(scope, key);
    message('state-message', 'Set ' + key + ' in ' + scope + '.', 'ok', 'SET');
  }

  async function deleteKey() {
    const scope = $('state-scope').value.trim(), key = $('state-key').value;
    const result = await post('/dashboard/api/state/delete', { service: scope, key });
    if (!result.ok) { stateError(result); return; }
    $('state-value-view').textContent = '';
    await loadScopes();
    message('state-message', 'Deleted ' + key + ' from ' + scope + '.', 'ok', 'DELETED');
  }

  async function createScope(event) {
    event.preventDefault();
    const scope = $('scope-new').value.trim();
    if (!scope) return;
    const result = await post('/dashboard/api/state/create-scope', { service: scope });
    if (!result.ok) { stateError(result); return; }
    $('scope-new').value = '';
    selectedScope = scope;
    await loadScopes();
    message('state-message', 'Created scope ' + scope + '.', 'ok', 'CREATED');
  }

  async function deleteScope() {
    if (!selectedScope) return;
    const scope = selectedScope;
    const result = await post('/dashboard/api/state/delete-scope', { service: scope });
    if (!result.ok) { stateError(result); return; }
    selectedScope = null;
    await loadScopes();
    message('state-message', 'Deleted scope ' + scope + '.', 'ok', 'DELETED');
  }

  // --- events and audit ---
  function openEvents() {
    $('events-tail').replaceChildren();
    tail('event', '', 'events-tail', (p) => JSON.stringify(p));
    loadAudit();
  }

  async function loadAudit(event) {
    if (event) event.preventDefault();
    const body = { since: Math.floor(Date.now() / 1000) - Number($('audit-since').value), limit: 200 };
    if ($('audit-actor').value.trim()) body.actor = $('audit-actor').value.trim();
    if ($('audit-action').value.trim()) body.action = $('audit-action').value.trim();
    const result = await post('/dashboard/api/audit/list', body);
    const rows = $('audit-body');
    rows.replaceChildren();
    if (!result.ok) {
      const e = errorOf(result);
      message('audit-message', e.text, 'error', e.code);
      return;
    }
    const records = result.json.data.records || [];
    message('audit-message', records.length + ' records');
    for (const r of records) {
      rows.append(el('tr', { 'data-action': r.action },
        el('td', { text: r.time }), el('td', { text: r.actor }), el('td', { text: r.action }),
        el('td', { text: r.target }), el('td', { text: r.outcome }), el('td', { text: r.source })));
    }
  }

  // --- start ---
  async function start() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('metrics-form').addEventListener('submit', loadMetrics);
    $('state-form').addEventListener('submit', setKey);
    $('state-delete').addEventListener('click', deleteKey);
    $('scope-create-form').addEventListener('submit', createScope);
    $('scope-delete').addEventListener('click', deleteScope);
    $('audit-form').addEventListener('submit', loadAudit);
    window.addEventListener('hashchange', route);
    let data = { authenticated: false };
    try {
      const response = await fetch('/dashboard/api/session', { credentials: 'same-origin' });
      data = (await response.json()).data;
    } catch (e) {
      message('login-error', 'The proxy does not answer.', 'error');
    }
    if (data.authenticated) loggedIn(data);
    else loggedOut('');
    document.body.dataset.started = 'true';
  }

  start();
}());
