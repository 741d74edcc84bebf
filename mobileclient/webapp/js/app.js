// The field app's entry point: opens IndexedDB, registers the service
// worker (and hands over to a new version only when no sync runs), routes
// between screens and drives automatic sync.

import { openDB } from './db.js';
import { h, newID, sleep } from './util.js';
import { Syncer, call, LOCK_NAME, PROTOCOL_VERSION, UPDATE_NEEDED } from './sync.js';
import * as ui from './ui.js';
import { renderVisit } from './visit.js';
import { latestForms } from './forms.js';
import { editHouseholdScreen, newHouseholdScreen } from './household.js';

const main = document.getElementById('main');
const banner = document.getElementById('banner');
const syncline = document.getElementById('syncline');
const net = document.getElementById('net');

const app = {
  db: null,
  syncer: null,
  version: '',
  leave: [],
  onLeave(fn) { this.leave.push(fn); },
  toast(text, kind = 'info') {
    banner.textContent = text;
    banner.className = 'banner ' + kind;
    banner.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { banner.hidden = true; }, kind === 'bad' ? 10000 : 4000);
  },
  busy(text) { if (text) syncline.textContent = text; },
  syncNow() { return this.syncer.sync({ auto: false }).then(() => route()); },
  afterSave() { setTimeout(() => this.syncer.sync({ auto: true }), 1000); },
  async enroll(code, name) {
    // The token is chosen here and saved first: if the answer is lost on
    // the way back, asking again with the same code and token (now, or
    // after a reload) is answered with the same device.
    const token = ui.enrollToken(localStorage, code);
    let resp;
    for (let attempt = 1; ; attempt++) {
      try {
        resp = await call('/api/v1/devices/enroll', { code, name: name || defaultName(), token });
        break;
      } catch (e) {
        if (!e.retryable || attempt >= ENROLL_ATTEMPTS) throw e;
        await sleep(Math.min(e.retryAfterMs || 1000 * attempt, 5000));
      }
    }
    if (!resp.device_id || !resp.token) throw new Error('服务器的回答不完整');
    if (resp.protocol_version && resp.protocol_version !== PROTOCOL_VERSION) throw new Error(`服务器协议版本 ${resp.protocol_version} 与本应用不兼容`);
    if (name) localStorage.setItem('fieldsync_devname', name);
    await this.db.write(['meta'], async (t) => {
      if (await t.meta('device_id')) throw new Error('本设备已经登记过');
      await t.setMeta('device_id', resp.device_id);
      await t.setMeta('token', resp.token);
      await t.setMeta('user', resp.user || {});
      await t.setMeta('server', location.origin);
      await t.setMeta('device_name', name || defaultName());
      await t.setMeta('enrolled_at', new Date().toISOString());
    });
    localStorage.removeItem(ui.ENROLL_ASK);
    this.toast('登记成功，正在下载农户数据…');
    location.hash = '#/';
    await this.syncer.sync({ auto: false });
    route();
  },
};
window.fieldsyncApp = app; // for the browser tests and debugging

// ENROLL_ATTEMPTS bounds the tries of one enrollment on a cut link.
const ENROLL_ATTEMPTS = 3;

function defaultName() {
  const ua = navigator.userAgent;
  return (/Android/.test(ua) ? '安卓设备' : '设备') + ' ' + new Date().toISOString().slice(0, 10);
}

function showNet() {
  net.textContent = navigator.onLine ? '在线' : '离线';
  net.className = 'net' + (navigator.onLine ? '' : ' off');
}

let routeGen = 0;

/**
 * route renders the screen the hash names. Screens render into a detached
 * element that replaces the page only if no later route started meanwhile
 * (screens read IndexedDB first, so two quick hash changes could finish
 * out of order).
 */
async function route() {
  const gen = ++routeGen;
  const hash = location.hash;
  for (const fn of app.leave.splice(0)) { try { fn(); } catch (_) { /* ignore */ } }
  const root = document.createElement('div');
  const m = await app.db.metaAll();
  const parts = (location.hash.replace(/^#\/?/, '') || '').split('/').map(decodeURIComponent);
  try {
    if (!m.token) ui.notEnrolledScreen(app, root, ui.enrollCodeFromHash(location.hash));
    else if (m.revoked && parts[0] !== 'outbox' && parts[0] !== 'log') ui.revokedScreen(app, root);
    else {
      switch (parts[0]) {
        case '': await ui.homeScreen(app, root); break;
        case 'places': await ui.placesScreen(app, root); break;
        case 'place': await ui.householdsScreen(app, root, parts[1]); break;
        case 'hh': await ui.householdScreen(app, root, parts[1]); break;
        case 'hhedit': await editHouseholdScreen(app, root, parts[1]); break;
        case 'hhnew': await newHouseholdScreen(app, root, parts[1]); break;
        case 'visit': await visitRoute(root, parts[1], parts[2], parts[3]); break;
        case 'redo': await redoRoute(parts[1]); return;
        case 'outbox': await ui.outboxScreen(app, root); break;
        case 'log': await ui.logScreen(app, root); break;
        case 'settings': await ui.settingsScreen(app, root); break;
        default: location.hash = '#/'; return;
      }
    }
  } catch (e) {
    root.replaceChildren(h('h1', {}, '出错了'), h('p', { class: 'err' }, e.message || String(e)), h('a', { class: 'btn', href: '#/' }, '回首页'));
  }
  if (gen !== routeGen) return; // a later route owns the page (and ran our leave hooks)
  main.replaceChildren(...root.childNodes);
  main.dataset.shown = hash; // which route the page shows (tests wait on it)
  main.dispatchEvent(new Event('rendered'));
}

async function visitRoute(main, hhID, formID, taskID) {
  const [hh, forms, task] = await app.db.read(['households', 'forms', 'tasks'], async (t) => [
    await t.get('households', hhID), await t.byIndex('forms', 'id', formID), taskID ? await t.get('tasks', taskID) : null]);
  const form = latestForms(forms)[0];
  if (!hh || !form) { main.replaceChildren(h('h1', {}, '找不到农户或表单'), h('a', { class: 'btn', href: '#/' }, '回首页')); return; }
  await renderVisit(app, main, { household: hh, form, correctsVisitID: task ? task.visit_id : '', taskReason: task ? task.reason : '' });
}

/**
 * redoRoute reopens a visit the server refused as a new draft with its
 * answers and attachments, so that the worker corrects it and saves it
 * again (a new visit: the refused one stays refused). The visit form then
 * marks the refusal as redone.
 */
async function redoRoute(seq) {
  const r = await app.db.read(['rejected'], (t) => t.get('rejected', Number(seq)));
  const v = r && r.body && r.body.visit;
  if (!v) { location.hash = '#/outbox'; return; }
  const task = v.corrects_visit_id
    ? (await app.db.read(['tasks'], (t) => t.all('tasks'))).find((x) => x.visit_id === v.corrects_visit_id) : null;
  const corrects = task ? v.corrects_visit_id : '';
  const draft = {
    id: `draft:${v.household_id}:${v.form_id}:${corrects}`, household_id: v.household_id, form_id: v.form_id,
    form_version: v.form_version, visit_id: newID(), answers: v.answers || {},
    evidence: (v.evidence || []).map(({ sha256, size, media_type, slot }) => ({ sha256, size, media_type, slot })),
    corrects_visit_id: corrects, redo_seq: r.seq, started: new Date().toISOString(),
  };
  await app.db.write(['drafts'], (t) => t.put('drafts', draft));
  location.hash = `#/visit/${encodeURIComponent(v.household_id)}/${encodeURIComponent(v.form_id)}` + (task ? '/' + encodeURIComponent(task.id) : '');
}

// --- service worker: install, and take a new version only when idle ---

async function registerSW() {
  if (!('serviceWorker' in navigator)) return;
  let reg;
  try {
    reg = await navigator.serviceWorker.register('sw.js', { scope: './' });
  } catch (e) {
    console.warn('service worker', e);
    return;
  }
  const ch = new MessageChannel();
  ch.port1.onmessage = (e) => { app.version = e.data.version; };
  (reg.active || reg.waiting || reg.installing)?.postMessage({ type: 'version' }, [ch.port2]);
  const offer = (w) => { if (w) takeOver(w); };
  if (reg.waiting) offer(reg.waiting);
  reg.addEventListener('updatefound', () => {
    const w = reg.installing;
    w.addEventListener('statechange', () => { if (w.state === 'installed' && navigator.serviceWorker.controller) offer(w); });
  });
  // The first worker claiming a fresh page is no update; any later change
  // of controller is a new version taking over: reload into it.
  let reloading = false;
  let hadController = !!navigator.serviceWorker.controller;
  navigator.serviceWorker.addEventListener('controllerchange', () => {
    if (!hadController) { hadController = true; return; }
    if (reloading) return;
    reloading = true;
    location.reload();
  });
  setInterval(() => reg.update().catch(() => {}), 30 * 60 * 1000);
}

/**
 * takeOver lets a waiting service worker activate once no sync runs in any
 * tab: it takes the sync lock itself, so no sync can start while the new
 * version takes over and the page reloads.
 */
async function takeOver(worker) {
  app.toast('应用有新版本，将在同步结束后自动更新');
  const tryNow = async () => {
    if (!navigator.locks) { worker.postMessage({ type: 'skip-waiting' }); return true; }
    return navigator.locks.request(LOCK_NAME, { ifAvailable: true }, async (lock) => {
      if (!lock) return false;
      app.syncer.blocked = true;
      worker.postMessage({ type: 'skip-waiting' });
      // Hold the lock until the new worker controls the page (the reload
      // follows) or give up after 10 s.
      await new Promise((r) => { navigator.serviceWorker.addEventListener('controllerchange', r, { once: true }); setTimeout(r, 10000); });
      app.syncer.blocked = false;
      return true;
    });
  };
  for (let i = 0; i < 1000; i++) {
    if (await tryNow()) return;
    await new Promise((r) => setTimeout(r, 3000));
  }
}

async function boot() {
  showNet();
  try {
    app.db = await openDB();
  } catch (e) {
    main.replaceChildren(h('h1', {}, '无法打开本机数据库'), h('p', { class: 'err' }, e.message || String(e)));
    return;
  }
  app.db.onversionchange = () => location.reload();
  app.syncer = new Syncer(app.db, {
    onStatus: (text) => { syncline.textContent = text; },
    onRevoked: () => route(),
    onUpdateNeeded: () => {
      app.toast(UPDATE_NEEDED, 'bad');
      navigator.serviceWorker?.getRegistration().then((r) => r && r.update()).catch(() => {});
    },
    onChange: () => { if (/^#?\/?$/.test(location.hash) || location.hash === '#/') route(); },
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('online', () => { showNet(); app.syncer.failures = 0; app.syncer.sync({ auto: true }); });
  window.addEventListener('offline', () => { showNet(); syncline.textContent = '离线：记录保存在本机，联网后自动同步'; });
  await route();
  registerSW();
  if (navigator.onLine && (await app.db.getMeta('token'))) app.syncer.sync({ auto: true });
}

boot();
