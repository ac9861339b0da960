// ClaudeCluster web console: plain JavaScript, no dependencies.
//
// Safety: everything the API returns is put on the page as text
// (textContent, createTextNode), never parsed as HTML; control characters
// are shown as visible symbols. The API token lives in sessionStorage only
// and travels in the Authorization header; the session WebSocket carries
// the short-lived session token the API hands out, held in memory.
'use strict';

(() => {
  const TOKEN_KEY = 'claudecluster.token';
  // How often the session lists refresh while shown.
  const LIST_POLL_MS = 3000;
  const ADMIN_POLL_MS = 5000;
  // Reconnection backoff after a dropped stream.
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 5000;
  // Keeps idle proxies from closing the stream.
  const KEEPALIVE_MS = 25000;

  const $ = (id) => document.getElementById(id);
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  let isAdmin = false;
  // A loopback server without any token serves this machine's requests
  // as its administrator; the console then needs no sign-in.
  let openMode = false;
  let timers = [];
  let live = null; // the open session page's stream state

  // ---- helpers -----------------------------------------------------------

  // Control characters (ESC of terminal sequences included) as visible
  // symbols, so the text is shown literally and cannot drive anything.
  function literal(s) {
    return String(s ?? '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) =>
      c === '\x7f' ? '\u2421' : String.fromCharCode(0x2400 + c.charCodeAt(0)));
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'text') e.textContent = literal(v);
      else if (k === 'class') e.className = v;
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) e.append(typeof c === 'string' ? literal(c) : c);
    return e;
  }

  function notice(message, kind) {
    const n = $('notice');
    n.textContent = literal(message);
    n.className = 'notice ' + (kind || '');
    n.hidden = !message;
  }

  async function api(method, path, body) {
    const headers = {};
    if (token()) headers.Authorization = 'Bearer ' + token();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const err = new Error((data && data.message) || (res.status + ' ' + res.statusText));
      err.status = res.status;
      err.code = data && data.code;
      if (res.status === 401 && token()) signOut('Your token was refused; sign in again.');
      throw err;
    }
    return data;
  }

  const fail = (what) => (e) => notice(what + ': ' + e.message, 'error');

  function age(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return Math.floor(s) + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd';
  }
  const usd = (n) => '$' + Number(n || 0).toFixed(4);
  function bytes(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0; n = Number(n || 0);
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
  }
  const sessionPath = (id) => '/api/v1/sessions/' + encodeURIComponent(id);

  // Replaces a live table's rows without losing the keyboard focus: the
  // focused control is found again by its data-key.
  function replaceRows(tbody, rows) {
    const key = document.activeElement && tbody.contains(document.activeElement) && document.activeElement.dataset.key;
    tbody.replaceChildren(...rows);
    if (key) { const again = tbody.querySelector('[data-key="' + CSS.escape(key) + '"]'); if (again) again.focus(); }
  }

  function every(ms, fn) {
    fn();
    timers.push(setInterval(fn, ms));
  }

  // ---- routing -----------------------------------------------------------

  function show(view) {
    for (const v of ['signin', 'sessions', 'session', 'admin']) $('view-' + v).hidden = v !== view;
  }

  function leave() {
    timers.forEach(clearInterval);
    timers = [];
    if (live) { live.closed = true; clearTimeout(live.retry); clearInterval(live.keepalive); if (live.ws) live.ws.close(); live = null; }
  }

  function route() {
    leave();
    notice('');
    if (!token() && !openMode) { $('nav').hidden = true; show('signin'); $('signin-token').focus(); return; }
    $('nav').hidden = false;
    $('sign-out').hidden = openMode;
    $('nav-admin').hidden = !isAdmin;
    const hash = location.hash || '#/';
    const m = hash.match(/^#\/session\/([^/]+)$/);
    if (m) return openSession(decodeURIComponent(m[1]));
    if (hash === '#/admin' && isAdmin) return openAdmin();
    return openSessions();
  }

  // ---- sign in / out -----------------------------------------------------

  async function signIn(ev) {
    ev.preventDefault();
    const field = $('signin-token');
    const value = field.value.trim();
    field.value = '';
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      await api('GET', '/api/v1/sessions');
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      notice('Sign-in failed: ' + e.message, 'error');
      return;
    }
    await detectAdmin();
    route();
  }

  async function detectAdmin() {
    try { await api('GET', '/api/v1/audit?limit=1'); isAdmin = true; } catch (_) { isAdmin = false; }
    $('whoami').textContent = isAdmin ? 'administrator' : '';
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    isAdmin = false;
    leave();
    if (location.hash && location.hash !== '#/') history.replaceState(null, '', '#/');
    route();
    if (typeof message === 'string') notice(message, 'error');
  }

  // ---- session list ------------------------------------------------------

  function openSessions() {
    show('sessions');
    every(LIST_POLL_MS, () => api('GET', '/api/v1/sessions?all=true').then(renderSessions, fail('Listing sessions')));
  }

  // Delete asks twice: the first click arms the button (kept across the
  // list's refreshes), the second deletes.
  const armed = new Set();

  function renderSessions(list) {
    list.sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
    replaceRows($('sessions-table').tBodies[0], list.map((s) => {
      const del = el('button', { type: 'button', class: 'danger', 'data-key': 'del:' + s.sessionId,
        text: armed.has(s.sessionId) ? 'Confirm delete' : 'Delete' });
      del.addEventListener('click', () => {
        if (!armed.has(s.sessionId)) { armed.add(s.sessionId); del.textContent = 'Confirm delete'; return; }
        armed.delete(s.sessionId);
        del.disabled = true;
        api('DELETE', sessionPath(s.sessionId)).then(() => notice('Deleted ' + s.sessionId), fail('Delete'));
      });
      const u = s.usage || {};
      return el('tr', { 'data-session': s.sessionId },
        el('td', {}, el('a', { href: '#/session/' + encodeURIComponent(s.sessionId), 'data-key': 'open:' + s.sessionId, text: s.sessionId })),
        el('td', { class: 'state state-' + s.state, text: stateText(s) }),
        el('td', { class: 'wrap', text: s.repoUrl + (s.branch ? ' @ ' + s.branch : '') }),
        el('td', { text: age(s.createdAt) }),
        el('td', { text: usd(u.costUsd) }),
        el('td', { text: String(u.turns || 0) }),
        el('td', {}, s.state === 'terminated' ? '' : del));
    }));
    $('sessions-empty').hidden = list.length > 0;
  }

  async function createSession(ev) {
    ev.preventDefault();
    const v = (id) => $(id).value.trim();
    const config = {};
    if (v('create-memory')) config.memory = v('create-memory');
    if (v('create-cpu')) config.cpu = /^\d+(\.\d+)?$/.test(v('create-cpu')) ? Number(v('create-cpu')) : v('create-cpu');
    if (v('create-idle')) config.idleTimeout = Number(v('create-idle'));
    const body = { repoUrl: v('create-repo'), claudeApiKey: $('create-key').value };
    if (v('create-branch')) body.branch = v('create-branch');
    if (Object.keys(config).length) body.config = config;
    if ($('create-permission').value) body.options = { permissionMode: $('create-permission').value };
    const button = ev.submitter || $('create-form').querySelector('button');
    button.disabled = true;
    try {
      const created = await api('POST', '/api/v1/sessions/create', body);
      $('create-key').value = ''; // no secret left on the page
      location.hash = '#/session/' + encodeURIComponent(created.sessionId);
    } catch (e) {
      notice('Create failed: ' + e.message, 'error');
    } finally {
      button.disabled = false;
    }
  }

  // ---- one session -------------------------------------------------------

  function openSession(id) {
    show('session');
    for (const p of ['diff', 'files', 'push']) $('panel-' + p).hidden = true;
    $('session-id').textContent = id;
    $('stream').replaceChildren();
    $('push-result').textContent = '';
    live = { id, lastSeq: 0, ws: null, closed: false, retry: null, delay: RECONNECT_MIN_MS, keepalive: null };
    connect(live);
    every(LIST_POLL_MS, () => api('GET', sessionPath(id)).then(renderFacts, fail('Session status')));
  }

  // The state, and whether a permission question waits for a person.
  function stateText(s) {
    const waiting = (s.pendingPermissions || []).length;
    return s.state + (waiting ? ' · waiting for you' : '');
  }

  function renderFacts(s) {
    $('session-state').textContent = literal(stateText(s));
    $('session-repo').textContent = literal(s.repoUrl + (s.branch ? ' @ ' + s.branch : ''));
    $('session-cost').textContent = usd(s.usage && s.usage.costUsd);
    $('session-turns').textContent = String((s.usage && s.usage.turns) || 0);
  }

  function connState(text) {
    $('session-conn').textContent = text;
  }

  async function connect(st) {
    if (st.closed) return;
    let status;
    try {
      // A fresh status each time: its endpoint carries a fresh session token.
      status = await api('GET', sessionPath(st.id));
    } catch (e) {
      if (e.status === 404) { notice('No such session: ' + st.id, 'error'); return; }
      return scheduleReconnect(st);
    }
    if (st.closed) return;
    renderFacts(status);
    if (status.state === 'terminated' && st.lastSeq >= status.lastSeq) { st.ended = true; connState('session ended'); return; }
    const url = new URL(status.endpoints.websocket, location.href);
    if (location.protocol === 'https:') url.protocol = 'wss:';
    url.searchParams.set('since', String(st.lastSeq));
    const ws = new WebSocket(url.toString());
    st.ws = ws;
    ws.addEventListener('open', () => {
      if (st.ws !== ws) return;
      st.delay = RECONNECT_MIN_MS;
      connState('connected');
      clearInterval(st.keepalive);
      st.keepalive = setInterval(() => send(st, { type: 'keepalive' }), KEEPALIVE_MS);
    });
    ws.addEventListener('message', (ev) => {
      if (st.ws !== ws) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      onMessage(st, msg);
    });
    ws.addEventListener('close', () => {
      if (st.ws !== ws || st.closed) return;
      clearInterval(st.keepalive);
      if (st.ended) { connState('session ended'); return; }
      scheduleReconnect(st);
    });
  }

  function scheduleReconnect(st) {
    if (st.closed) return;
    connState('reconnecting…');
    clearTimeout(st.retry);
    st.retry = setTimeout(() => connect(st), st.delay);
    st.delay = Math.min(st.delay * 2, RECONNECT_MAX_MS);
  }

  function send(st, msg) {
    if (!st || !st.ws || st.ws.readyState !== WebSocket.OPEN) return false;
    st.ws.send(JSON.stringify(msg));
    return true;
  }

  function onMessage(st, msg) {
    const d = msg.data || {};
    const seq = Number(d.seq || 0);
    if (seq) {
      if (seq <= st.lastSeq) return; // already shown
      st.lastSeq = seq;
    }
    const stream = $('stream');
    const atBottom = stream.scrollHeight - stream.scrollTop - stream.clientHeight < 40;
    switch (msg.type) {
      case 'output': renderOutput(stream, d); break;
      case 'command':
        stream.append(el('div', { class: 'msg command', 'data-seq': seq }, el('span', { class: 'prompt', text: '› ' }), d.text));
        break;
      case 'status':
        st.ended = d.state === 'terminated';
        $('session-state').textContent = literal(d.state);
        stream.append(el('div', { class: 'msg status', 'data-seq': seq, text: '● ' + d.state + (d.reason ? ' — ' + d.reason : '') }));
        break;
      case 'turnResult': {
        const t = d.turn || {};
        const ok = !t.isError;
        const interrupted = String(t.terminalReason || '').startsWith('aborted');
        const secs = (Number(t.durationMs || 0) / 1000).toFixed(1) + 's';
        const head = interrupted ? '✗ interrupted' : ok ? '✓ turn done' : '✗ turn failed' + (t.error ? ': ' + t.error : '');
        stream.append(el('div', { class: 'msg turn ' + (ok && !interrupted ? 'ok' : 'bad'), 'data-seq': seq },
          head + ' · ' + usd(t.costUsd) + ' · ' + secs));
        if (d.totals) {
          $('session-cost').textContent = usd(d.totals.costUsd);
          $('session-turns').textContent = String(d.totals.turns || 0);
        }
        break;
      }
      case 'error':
        stream.append(el('div', { class: 'msg error', 'data-seq': seq, text: '⚠ ' + d.message }));
        break;
      case 'permissionRequest': renderQuestion(stream, st, d, seq); break;
      case 'permissionAnswer': renderAnswer(stream, d, seq); break;
      default: break; // claude (raw events), keepalive
    }
    if (atBottom) stream.scrollTop = stream.scrollHeight;
  }

  // Output text: assistant words as they stream; "▶ Tool: …" lines open a
  // folded tool call that the following "⎿" result lines go into. The
  // turn's closing summary is left to its turnResult message.
  function renderOutput(stream, d) {
    const ev = d.event || {};
    if (ev.type === 'result') return;
    const text = String(d.text ?? '');
    const structured = /(^|\n)\s*[▶⎿]/.test(text) || ev.type === 'assistant' || ev.type === 'user';
    if (!structured) {
      let last = stream.lastElementChild;
      if (!last || !last.classList.contains('text')) { last = el('div', { class: 'msg text' }); stream.append(last); }
      last.append(document.createTextNode(literal(text)));
      return;
    }
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const trimmed = line.trim();
      let last = stream.lastElementChild;
      // A permission question sits between a tool call and its result.
      if (last && last.classList.contains('permission') && last.previousElementSibling) last = last.previousElementSibling;
      if (trimmed.startsWith('▶')) {
        const body = el('pre', { class: 'result' });
        stream.append(el('details', { class: 'msg tool' }, el('summary', { text: trimmed }), body));
      } else if (last && last.classList.contains('tool') && (trimmed.startsWith('⎿') || /^\s/.test(line))) {
        const body = last.querySelector('pre.result');
        body.append(document.createTextNode(literal(trimmed) + '\n'));
        if (trimmed.startsWith('⎿')) last.querySelector('summary').dataset.done = 'yes';
      } else {
        stream.append(el('div', { class: 'msg text', text: line + '\n' }));
      }
    }
  }

  // A permission question: the tool and its input as text, and the
  // answers. The first answer anywhere wins; the permissionAnswer that
  // follows settles the card (here or in every other open console).
  function renderQuestion(stream, st, d, seq) {
    const input = typeof d.input === 'string' ? d.input : JSON.stringify(d.input ?? {}, null, 2);
    const why = el('input', { class: 'deny-why', 'aria-label': 'Reason for denying (optional)', placeholder: 'reason (optional, for Deny)' });
    const buttons = [['Allow', { allow: true }], ['Deny', { allow: false }], ['Always', { allow: true, always: true }]]
      .map(([label, answer]) => {
        const b = el('button', { type: 'button', class: 'answer answer-' + label.toLowerCase(), text: label });
        b.addEventListener('click', () => answerQuestion(st, d.requestId, card, answer, why));
        return b;
      });
    const card = el('div', { class: 'msg permission', role: 'group', 'aria-label': 'Permission request', 'data-seq': seq, 'data-request': d.requestId },
      el('p', { class: 'ask', text: '? Claude Code asks to run ' + d.tool }),
      el('pre', { class: 'input', text: input }),
      el('div', { class: 'answers' }, ...buttons, why),
      el('p', { class: 'outcome muted' }));
    stream.append(card);
    // No focus is moved to the buttons: keys meant for the command box
    // must never answer a question.
    $('session-state').textContent = 'busy · waiting for you';
  }

  async function answerQuestion(st, requestId, card, answer, why) {
    const body = Object.assign({}, answer);
    if (!answer.allow && why.value.trim()) body.message = why.value.trim();
    card.querySelectorAll('button').forEach((b) => { b.disabled = true; });
    try {
      await api('POST', sessionPath(st.id) + '/permissions/' + encodeURIComponent(requestId), body);
    } catch (e) {
      notice('Answer not taken: ' + e.message, 'error');
      if (e.status !== 409 && e.status !== 404) card.querySelectorAll('button').forEach((b) => { b.disabled = false; });
    }
  }

  function renderAnswer(stream, d, seq) {
    const verdict = d.allow ? (d.always ? 'allowed for the rest of the session' : 'allowed') : 'denied';
    const by = d.source === 'answer' ? (d.answeredBy ? ' by ' + d.answeredBy : '') : ' (' + d.source + ')';
    const text = d.tool + ' ' + verdict + by + (!d.allow && d.message ? ': ' + d.message : '');
    const card = [...stream.querySelectorAll('.permission')].find((c) => c.dataset.request === d.requestId);
    if (card) {
      card.querySelectorAll('button, input').forEach((b) => { b.disabled = true; });
      card.classList.add(d.allow ? 'allowed' : 'denied');
      card.querySelector('.outcome').textContent = literal(text);
    } else {
      stream.append(el('div', { class: 'msg status', 'data-seq': seq, text: '● ' + text }));
    }
  }

  function sendCommand(ev) {
    ev.preventDefault();
    const box = $('command-text');
    const command = box.value.trim();
    if (!command) return;
    if (send(live, { type: 'command', data: { command } })) {
      box.value = '';
    } else {
      notice('Not connected; the command was not sent. Try again in a moment.', 'error');
    }
  }

  function interrupt() {
    if (!send(live, { type: 'interrupt' })) notice('Not connected.', 'error');
  }

  // A fork: a new session from a copy of this one's checkout and
  // conversation; the console opens it.
  async function fork() {
    if (!live) return;
    try {
      const forked = await api('POST', sessionPath(live.id) + '/fork', {});
      location.hash = '#/session/' + encodeURIComponent(forked.sessions[0].sessionId);
    } catch (e) {
      notice(e.message, 'error');
    }
  }

  // Sleep and wake by hand (a command wakes a sleeping session too); the
  // stream shows the states as they come.
  async function lifecycle(action) {
    if (!live) return;
    try {
      await api('POST', sessionPath(live.id) + '/' + action);
    } catch (e) {
      notice(e.message, 'error');
    }
  }

  function togglePanel(name, load) {
    const p = $('panel-' + name);
    p.hidden = !p.hidden;
    if (!p.hidden && load) load();
  }

  async function loadDiff() {
    if (!live) return;
    $('diff-summary').textContent = 'Loading…';
    try {
      const d = await api('GET', sessionPath(live.id) + '/diff');
      $('diff-summary').textContent = literal(d.files.length + ' file(s) changed, +' + d.insertions + ' −' + d.deletions + (d.truncated ? ' (cut)' : ''));
      $('diff-files').replaceChildren(...d.files.map((f) =>
        el('li', { text: f.path + (f.binary ? ' (binary)' : '  +' + f.insertions + ' −' + f.deletions) })));
      $('diff-text').textContent = literal(d.diff);
    } catch (e) {
      $('diff-summary').textContent = literal('Diff unavailable: ' + e.message);
    }
  }

  async function loadFiles(path) {
    if (!live) return;
    const p = (path ?? $('files-path').value).trim().replace(/^\/+|\/+$/g, '');
    $('files-path').value = p;
    $('files-content').textContent = '';
    try {
      const r = await api('GET', sessionPath(live.id) + '/files?path=' + encodeURIComponent(p));
      if (r.type === 'dir') {
        $('files-list').replaceChildren(...r.entries.map((e) => {
          const child = (r.path ? r.path + '/' : '') + e.name;
          const b = el('button', { type: 'button', class: 'link', text: e.name + (e.type === 'dir' ? '/' : '') });
          b.addEventListener('click', () => loadFiles(child));
          return el('li', {}, b, e.type === 'file' ? el('span', { class: 'muted', text: ' ' + bytes(e.size) }) : '');
        }));
      } else {
        $('files-list').replaceChildren();
        $('files-content').textContent = r.encoding === 'utf8'
          ? literal(r.content) + (r.truncated ? '\n… (cut)' : '')
          : '(binary file, ' + bytes(r.size) + ')';
      }
    } catch (e) {
      $('files-content').textContent = literal('Cannot open: ' + e.message);
    }
  }

  async function push(ev) {
    ev.preventDefault();
    if (!live) return;
    const body = {};
    const v = (id) => $(id).value.trim();
    if (v('push-branch')) body.branch = v('push-branch');
    if (v('push-message')) body.message = v('push-message');
    if ($('push-pr').checked) {
      body.pullRequest = { draft: $('push-draft').checked };
      if (v('push-title')) body.pullRequest.title = v('push-title');
    }
    const out = $('push-result');
    out.textContent = 'Pushing…';
    try {
      const r = await api('POST', sessionPath(live.id) + '/push', body);
      out.replaceChildren(literal('Pushed ' + r.commit.slice(0, 7) + ' to ' + r.branch + (r.committedChanges ? ' (uncommitted work committed first)' : '') + '. '));
      if (r.pullRequest) {
        const safe = /^https?:\/\//.test(r.pullRequest.url);
        out.append(safe
          ? el('a', { href: r.pullRequest.url, rel: 'noopener noreferrer', target: '_blank', text: 'Pull request #' + r.pullRequest.number })
          : literal('Pull request #' + r.pullRequest.number));
      }
    } catch (e) {
      out.textContent = literal('Push failed: ' + e.message);
    }
  }

  // ---- administration ----------------------------------------------------

  function openAdmin() {
    show('admin');
    every(ADMIN_POLL_MS, refreshAdminSessions);
    loadAudit();
    loadTokens();
  }

  async function refreshAdminSessions() {
    try {
      const list = await api('GET', '/api/v1/sessions?all=true');
      const liveOnes = list.filter((s) => s.state !== 'terminated');
      // The list leaves out resources; each live session's status has them.
      const detailed = await Promise.all(liveOnes.map((s) => api('GET', sessionPath(s.sessionId)).catch(() => s)));
      replaceRows($('admin-sessions').tBodies[0], detailed.map((s) => {
        const r = s.resources;
        return el('tr', { 'data-session': s.sessionId },
          el('td', {}, el('a', { href: '#/session/' + encodeURIComponent(s.sessionId), 'data-key': 'open:' + s.sessionId, text: s.sessionId })),
          el('td', { text: s.state }),
          el('td', { class: 'wrap', text: s.repoUrl }),
          el('td', { text: r ? r.cpuPercent.toFixed(1) + '%' : '–' }),
          el('td', { text: r ? bytes(r.memoryBytes) + ' / ' + bytes(r.memoryLimitBytes) : '–' }),
          el('td', { text: r ? bytes(r.networkRxBytes) + ' / ' + bytes(r.networkTxBytes) : '–' }),
          el('td', { text: r ? String(r.pids) : '–' }),
          el('td', { text: r && r.workspaceBytes != null ? bytes(r.workspaceBytes) + (r.workspaceLimitBytes ? ' / ' + bytes(r.workspaceLimitBytes) : '') : '–' }),
          el('td', { text: usd(s.usage && s.usage.costUsd) }));
      }));
    } catch (e) { fail('Admin sessions')(e); }
  }

  async function loadAudit(ev) {
    if (ev) ev.preventDefault();
    const q = new URLSearchParams({ limit: '1000' });
    if ($('audit-actor').value.trim()) q.set('actor', $('audit-actor').value.trim());
    if ($('audit-action').value.trim()) q.set('action', $('audit-action').value.trim());
    try {
      const page = await api('GET', '/api/v1/audit?' + q);
      // The newest 200, newest first.
      const rows = page.records.slice(-200).reverse();
      $('audit-table').tBodies[0].replaceChildren(...rows.map((r) => el('tr', {},
        el('td', { text: String(r.seq) }), el('td', { text: r.time }), el('td', { text: r.actor }),
        el('td', { text: r.action }), el('td', { text: r.sessionId || '' }),
        el('td', { text: r.outcome }), el('td', { class: 'wrap', text: r.detail || '' }))));
    } catch (e) { fail('Audit log')(e); }
  }

  async function loadTokens() {
    try {
      const list = await api('GET', '/api/v1/admin/tokens');
      $('tokens-table').tBodies[0].replaceChildren(...list.map((t) => {
        const revoke = el('button', { type: 'button', class: 'danger', text: 'Revoke' });
        revoke.addEventListener('click', () => api('DELETE', '/api/v1/admin/tokens/' + encodeURIComponent(t.id)).then(loadTokens, fail('Revoke')));
        return el('tr', {},
          el('td', { text: t.id }), el('td', { text: t.user }), el('td', { text: t.role }),
          el('td', { text: t.label || '' }), el('td', { text: t.createdAt }),
          el('td', { text: t.revokedAt || '' }), el('td', {}, t.revokedAt ? '' : revoke));
      }));
    } catch (e) { fail('Tokens')(e); }
  }

  async function createToken(ev) {
    ev.preventDefault();
    const body = { user: $('token-user').value.trim(), role: $('token-role').value };
    if ($('token-label').value.trim()) body.label = $('token-label').value.trim();
    try {
      const created = await api('POST', '/api/v1/admin/tokens', body);
      $('token-new').value = created.token;
      $('token-created').hidden = false;
      $('token-form').reset();
      loadTokens();
    } catch (e) { fail('Create token')(e); }
  }

  // ---- wiring ------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', async () => {
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut());
    $('create-form').addEventListener('submit', createSession);
    $('command-form').addEventListener('submit', sendCommand);
    $('command-text').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $('command-form').requestSubmit(); }
    });
    $('interrupt').addEventListener('click', interrupt);
    $('sleep').addEventListener('click', () => lifecycle('sleep'));
    $('wake').addEventListener('click', () => lifecycle('wake'));
    $('fork').addEventListener('click', fork);
    $('show-diff').addEventListener('click', () => togglePanel('diff', loadDiff));
    $('show-files').addEventListener('click', () => togglePanel('files', () => loadFiles('')));
    $('show-push').addEventListener('click', () => togglePanel('push'));
    $('files-form').addEventListener('submit', (e) => { e.preventDefault(); loadFiles(); });
    $('files-up').addEventListener('click', () => loadFiles($('files-path').value.split('/').slice(0, -1).join('/')));
    $('push-form').addEventListener('submit', push);
    $('audit-form').addEventListener('submit', loadAudit);
    $('token-form').addEventListener('submit', createToken);
    $('token-dismiss').addEventListener('click', () => { $('token-new').value = ''; $('token-created').hidden = true; });
    window.addEventListener('hashchange', route);
    if (token()) {
      await detectAdmin();
    } else {
      try {
        await api('GET', '/api/v1/sessions');
        openMode = true;
        await detectAdmin();
        $('whoami').textContent = 'open mode (this machine only)';
      } catch (_) { openMode = false; }
    }
    route();
  });
})();
