// plantd dashboard: plain JavaScript, no dependencies, served by the proxy.
//
// The session lives in an HttpOnly cookie the page never sees; every POST carries the CSRF token
// from /dashboard/api/session in X-CSRF-Token. The overview and workers pages render the
// snapshots the proxy pushes over SSE (/dashboard/api/live); the other pages call
// /dashboard/api/{state,logger,audit}/... on the user's behalf and show the services' answers,
// refusals included.
//
// A page holds one SSE stream, never more: a page with a bus tail (metrics, events) asks for it
// on the same stream (?bus=&prefix=, `bus` events), so that several tabs fit in the browser's
// six HTTP/1.1 connections per host.
'use strict';

(function () {
  const PAGES = ['overview', 'workers', 'metrics', 'state', 'events'];
  const COLORS = ['#1f6f43', '#1d4ed8', '#b45309', '#9d174d', '#0f766e', '#6d28d9', '#4d7c0f', '#be123c'];
  const TAIL_MAX = 100;
  const SVG = 'http://www.w3.org/2000/svg';

  let session = null;
  let live = null;
  let liveQuery = null;
  let snapshot = null;
  // What the current page does with a `bus` event of the live stream (null: nothing).
  let busHandler = null;
  // Per service: the last snapshot's time and request count, and the rate between the last two.
  const serviceRates = new Map();
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
    if (!PAGES.includes(location.hash.slice(1))) location.hash = '#overview';
    route();
    // Keyboard users land on the current page's link: Tab goes on through the pages.
    const current = document.querySelector('#nav a[aria-current="page"]');
    if (current) current.focus();
  }

  function loggedOut(text) {
    session = null;
    if (live) { live.close(); live = null; liveQuery = null; }
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
    busHandler = null;
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
    // The pages without a bus tail: the snapshots alone.
    if (page !== 'metrics' && page !== 'events') startLive(null);
  }

  // --- the live stream: snapshots, and the current page's bus tail ---
  // Opens the page's one SSE stream: snapshots, plus `feed` ({bus, prefix}) when given. A stream
  // already following the same feed is kept.
  function startLive(feed) {
    const query = feed ? '?bus=' + encodeURIComponent(feed.bus) + '&prefix=' + encodeURIComponent(feed.prefix || '') : '';
    if (live && liveQuery === query) return;
    if (live) live.close();
    liveQuery = query;
    live = new EventSource('/dashboard/api/live' + query);
    live.addEventListener('snapshot', (event) => {
      snapshot = JSON.parse(event.data);
      noteRates(snapshot);
      render();
    });
    live.addEventListener('bus', (event) => {
      if (busHandler) busHandler(JSON.parse(event.data));
    });
    live.addEventListener('error', () => {
      $('live-status').textContent = 'Reconnecting to the proxy…';
    });
  }

  // Requests per second of each service between the last two snapshots.
  function noteRates(snap) {
    if (!snap.ready || !snap.services) return;
    for (const s of snap.services) {
      const before = serviceRates.get(s.name);
      // A reopened stream starts with the snapshot already seen.
      if (before && before.time === snap.time_ms) continue;
      let rate = null;
      if (before && snap.time_ms > before.time && s.requests >= before.requests) {
        rate = (s.requests - before.requests) * 1000 / (snap.time_ms - before.time);
      }
      serviceRates.set(s.name, { time: snap.time_ms, requests: s.requests, rate });
    }
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
      const rate = (serviceRates.get(s.name) || {}).rate;
      body.append(el('tr', { 'data-service': s.name },
        el('th', { scope: 'row', text: s.name }),
        el('td', { class: 'num workers', 'data-workers': s.workers, text: s.workers }),
        el('td', { class: 'num', text: s.idle }),
        el('td', { class: 'num queued', text: s.queued }),
        el('td', { class: 'num requests', 'data-requests': s.requests || 0, text: fmt(s.requests || 0) }),
        el('td', { class: 'num errors' + (s.errors ? ' error' : ''), 'data-errors': s.errors || 0, text: fmt(s.errors || 0) }),
        el('td', { class: 'num rate', text: typeof rate === 'number' ? fmt(rate) : '–' })));
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

  // A time chart in `chart` (an <svg>), as wide as it is shown: `series` of
  // {color, topic, points: [[t_ms, value, min?, max?]]} over the `span` ms before `now`.
  // Draws min/max bands when given, a line per series and, with `dots`, a circle per point.
  function timeChart(chart, series, now, span, dots) {
    const width = Math.max(280, Math.round(chart.getBoundingClientRect().width) || 600);
    const height = Number(chart.dataset.height || 180);
    const pad = { l: 52, r: 12, t: 10, b: 22 };
    chart.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    chart.replaceChildren();
    const start = now - span;
    const values = series.flatMap((s) => s.points.flatMap((p) => [p[1], p[2], p[3]]))
      .filter((v) => typeof v === 'number');
    let lo = Math.min(0, ...values), hi = Math.max(...values, 1);
    if (chart.dataset.zero !== 'true' && values.length) { lo = Math.min(...values); hi = Math.max(...values); }
    if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
    const range = hi - lo;
    hi += range * 0.08;
    if (chart.dataset.zero !== 'true') lo -= range * 0.08;
    const x = (t) => pad.l + (width - pad.l - pad.r) * (t - start) / span;
    const y = (v) => height - pad.b - (height - pad.t - pad.b) * (v - lo) / (hi - lo);
    chart.append(svg('line', { class: 'axis', x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
    chart.append(svg('line', { class: 'axis', x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b }));
    for (let i = 0; i <= 4; i++) {
      const value = lo + (hi - lo) * i / 4;
      const text = svg('text', { class: 'tick', x: pad.l - 4, y: y(value) + 3, 'text-anchor': 'end' });
      text.textContent = fmt(value);
      chart.append(text);
    }
    for (const [fraction, anchor] of [[0, 'start'], [0.5, 'middle'], [1, 'end']]) {
      const ago = span * (1 - fraction);
      const text = svg('text', { class: 'tick', x: x(start + span * fraction), y: height - 6, 'text-anchor': anchor });
      text.textContent = ago === 0 ? 'now' : '-' + (ago >= 120000 ? Math.round(ago / 60000) + ' min' : Math.round(ago / 1000) + ' s');
      chart.append(text);
    }
    const coords = (p, i) => x(p[0]).toFixed(1) + ',' + y(p[i]).toFixed(1);
    let drawn = 0;
    for (const s of series) {
      const points = s.points.filter((p) => p[0] >= start - 1);
      if (points.length > 1 && typeof points[0][2] === 'number') {
        const band = points.map((p) => coords(p, 3)).concat(points.slice().reverse().map((p) => coords(p, 2)));
        chart.append(svg('polygon', { class: 'band', points: band.join(' '), fill: s.color, 'fill-opacity': 0.15 }));
      }
      if (points.length > 1) {
        chart.append(svg('polyline', { class: 'line', points: points.map((p) => coords(p, 1)).join(' '), fill: 'none', stroke: s.color, 'stroke-width': 2 }));
      }
      if (dots) {
        for (const p of points) {
          const dot = svg('circle', { class: 'point', cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 3, fill: s.color, 'data-topic': s.topic || '' });
          const title = svg('title', {});
          title.textContent = (s.topic ? s.topic + ' ' : '') + new Date(p[0]).toLocaleTimeString() + ': ' + fmt(p[1]) +
            (typeof p[2] === 'number' ? ' (min ' + fmt(p[2]) + ', max ' + fmt(p[3]) + ')' : '');
          dot.append(title);
          chart.append(dot);
        }
      }
      drawn += points.length;
    }
    return drawn;
  }

  // The span a chart shows: the data's own extent (at least a minute), at most `max` ms.
  function spanOf(first, now, max) {
    return Math.min(max, Math.max(60000, now - first));
  }

  function drawThroughput(points, now) {
    const chart = $('throughput-chart');
    const span = spanOf(points.length ? points[0][0] : now, now, 600000);
    timeChart(chart, [{ color: '#1f6f43', points }], now, span, false);
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
            .map((h, i) => el('th', i >= 3 ? { scope: 'col', class: 'num', text: h } : { scope: 'col', text: h })))),
          el('tbody', {}, ...rows)))));
    }
  }

  // --- bus tails (on the page's live stream) ---
  function tail(bus, prefix, listId, describe) {
    busHandler = (message) => {
      const list = $(listId);
      list.prepend(el('li', { 'data-topic': message.topic },
        el('span', { class: 'topic', text: message.topic }), ' ', describe(message.payload)));
      while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
    };
    startLive({ bus, prefix: prefix || '' });
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
    const bucket = Math.max(1, Math.round(windowSecs / 100));
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
    drawMetrics(series, windowSecs, bucket);
  }

  function drawMetrics(series, windowSecs, bucketSecs) {
    const chart = $('metrics-chart');
    const legend = $('metrics-legend');
    legend.replaceChildren();
    const now = Date.now();
    const shown = series.map((s, i) => ({
      color: COLORS[i],
      topic: s.topic,
      points: s.buckets.filter((b) => b.count > 0)
        .map((b) => [Math.min(now, Date.parse(b.start) + bucketSecs * 500), b.avg, b.min, b.max]),
    }));
    const first = Math.min(now, ...shown.flatMap((s) => s.points.map((p) => p[0])));
    const span = spanOf(first - bucketSecs * 1000, now, windowSecs * 1000);
    chart.dataset.points = String(timeChart(chart, shown, now, span, true));
    for (const s of shown) {
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = s.color;
      legend.append(el('li', { 'data-topic': s.topic }, swatch, s.topic));
    }
  }

  // --- state ---
  function stateError(result) {
    const e = errorOf(result);
    message('state-message', e.text, 'error', e.code);
  }

  async function loadScopes() {
    const writer = granted('state:data:write') ||
      session.permissions.some((p) => /^state:scope:.+:(write|admin)$/.test(p));
    $('state-access').textContent = writer ? ''
      : 'Your permissions do not include writing state: the state service will refuse changes.';
    const result = await post('/dashboard/api/state/list-scopes', {});
    const list = $('scope-list');
    list.replaceChildren();
    list.dataset.loaded = 'true';
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
    // The skip link moves focus to the content; following its #main would change the page.
    $('skip').addEventListener('click', (event) => {
      event.preventDefault();
      $('main').focus();
    });
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
