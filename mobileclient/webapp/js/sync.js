// Sync with the server, speaking syncproto (protocol version 1): push the
// outbox in sequence order, pull pages of changes (each page and its cursor
// in one IndexedDB transaction), then upload the evidence the server lacks
// with tus (resumable; the upload URL lives in IndexedDB so an upload
// resumes after the app or the tablet restarts).
//
// One sync at a time across all tabs (Web Locks, lock "fieldsync-sync").
// Automatic when online, with exponential backoff; Retry-After on 503 and
// 429 is honoured.

import { enqueue, SCOPE_STORES } from './db.js';
import { maxHLC, nextHLC, fmtBytes } from './util.js';
import { overlayPending, settleRejected } from './hhfields.js';
import { START_BATCH, nextBatch, takeBatch } from './batch.js';

export const PROTOCOL_VERSION = 1;
export const LOCK_NAME = 'fieldsync-sync';
export const APP_VERSION = '0.1.0';
const PULL_MAX_BYTES = 262144;
const MAX_PULL_PAGES = 10000;
const MISSING_BATCH = 1000; // api.MaxMissingQuery
const CHUNK = 256 * 1024;
const LOG_KEEP = 500;
const SENT_KEEP = 5000; // answered mutations kept for a server restored from a backup

/** ApiError is a failed API call, with the server's code and message. */
export class ApiError extends Error {
  constructor(status, code, message, details, retryAfterMs) {
    super(message || code || `HTTP ${status}`);
    this.status = status; this.code = code; this.details = details || {}; this.retryAfterMs = retryAfterMs;
  }
  get retryable() { return this.status === 0 || this.status === 429 || this.status >= 500; }
}

function retryAfterMs(v) {
  if (!v) return 0;
  if (/^\d+$/.test(v.trim())) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? 0 : Math.max(0, t - Date.now());
}

/** call POSTs JSON to the API and returns the decoded answer. */
export async function call(path, body, token, { signal } = {}) {
  let res;
  try {
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body), signal, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new ApiError(0, 'network', '网络不通：' + (e && e.message ? e.message : e));
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    throw new ApiError(res.status, data && data.code, data && data.message, data && data.details, retryAfterMs(res.headers.get('Retry-After')));
  }
  return data;
}

/** UPDATE_NEEDED tells the worker that the server speaks a newer protocol. */
export const UPDATE_NEEDED = '服务器已升级，本应用版本过旧，请联网后重新打开应用以更新；未上传的记录仍保存在本机，不会丢失';

/**
 * checkVersion refuses an answer in a protocol version this app does not
 * speak: nothing of it is applied, the outbox stays.
 */
export function checkVersion(resp) {
  const v = resp && resp.protocol_version;
  if (typeof v === 'number' && v > PROTOCOL_VERSION) {
    throw new ApiError(426, 'unsupported_protocol_version', `服务器的回答使用协议版本 ${v}，本应用只支持 ${PROTOCOL_VERSION}`);
  }
}

/** describe turns an error into one line of Chinese for the log. */
export function describe(e) {
  if (e instanceof ApiError) {
    if (e.status === 0) return e.message;
    if (e.status === 401) return '设备已被停用或令牌无效（401）';
    if (e.status === 429) return '服务器繁忙，稍后重试（429）';
    if (e.status === 503) return '服务器暂时不可用，稍后重试（503）';
    if (e.status === 426) return UPDATE_NEEDED + '（426）';
    return `服务器拒绝（${e.status} ${e.code || ''}）：${e.message}`;
  }
  return (e && e.message) || String(e);
}

/** applyOps applies one pulled page's ops inside transaction t. */
export async function applyOps(t, ops) {
  const stores = { place: 'places', form: 'forms', household: 'households', visit: 'visits', conflict: 'conflicts', task: 'tasks' };
  for (const op of ops) {
    switch (op.op) {
      case 'put': {
        const s = stores[op.type];
        if (!s) break;
        if (op.type === 'place' && op.place_data) await t.put(s, op.place_data);
        else if (op.type === 'form' && op.form) await t.put(s, { ...op.form, key: `${op.form.id}@${op.form.version}` });
        else if (op.type === 'household' && op.household) await t.put(s, op.household);
        else if (op.type === 'visit' && op.visit) await t.put(s, { ...op.visit, synced: true });
        else if (op.type === 'conflict' && op.conflict) await t.put(s, op.conflict);
        else if (op.type === 'task' && op.task) await t.put(s, op.task);
        break;
      }
      case 'delete': {
        const s = stores[op.type];
        if (!s || !op.id) break;
        if (op.type === 'form') {
          for (const k of await t.keysByIndex('forms', 'id', op.id)) await t.del('forms', k);
        } else {
          await t.del(s, op.id);
        }
        break;
      }
      case 'scope_leave':
        await dropPlace(t, op.place);
        break;
      case 'reset':
        for (const s of SCOPE_STORES) await t.clear(s);
        break;
      default: // scope_enter and unknown ops: the puts that follow carry the data
        break;
    }
  }
}

/** dropPlace removes a place, its descendants and everything held under them. */
async function dropPlace(t, code) {
  const places = await t.all('places');
  const kids = new Map();
  for (const p of places) {
    if (!p.parent_code) continue;
    if (!kids.has(p.parent_code)) kids.set(p.parent_code, []);
    kids.get(p.parent_code).push(p.code);
  }
  const gone = new Set([code]);
  const queue = [code];
  while (queue.length) {
    for (const c of kids.get(queue.shift()) || []) if (!gone.has(c)) { gone.add(c); queue.push(c); }
  }
  for (const c of gone) {
    await t.del('places', c);
    for (const hid of await t.keysByIndex('households', 'place', c)) {
      await t.del('households', hid);
      for (const s of ['visits', 'tasks', 'conflicts']) {
        for (const k of await t.keysByIndex(s, 'household', hid)) await t.del(s, k);
      }
    }
  }
}

/**
 * requeueLost compares the server's last_seq for this device (a pull says
 * it) with the answers the device holds: mutations the server once
 * answered but no longer has go back into the outbox, from the kept
 * copies. Returns how many. Absent last_seq: the server does not track it.
 */
export async function requeueLost(t, serverLast) {
  if (typeof serverLast !== 'number') return 0;
  const acked = await t.meta('last_seq', 0);
  if (serverLast >= acked) return 0;
  const lost = await t.all('sent', IDBKeyRange.lowerBound(serverLast, true));
  for (const row of lost) {
    const { status, answered, ...orig } = row;
    if (!(await t.get('outbox', row.seq))) await t.put('outbox', { ...orig, requeued: true });
    await t.del('sent', row.seq);
  }
  await t.setMeta('last_seq', serverLast);
  return lost.length;
}

/**
 * renumberOutbox gives the outbox rows numbered from on new numbers after
 * serverLast (the server applied from..serverLast with other content), in
 * order, inside t (outbox, meta, visits), with the seq inside each body;
 * rows before from are replays of what the server has and keep theirs.
 * The next number handed out moves past the new ones. Returns how many
 * rows moved. As mobileclient's renumberOutbox.
 */
export async function renumberOutbox(t, from, serverLast) {
  if (!Number.isInteger(from) || !Number.isInteger(serverLast) || from < 1 || serverLast < from) {
    throw new Error(`服务器的回答有误：序号 ${from} 被占用，但服务器的最后序号是 ${serverLast}`);
  }
  const shift = serverLast + 1 - from;
  const rows = await t.all('outbox', IDBKeyRange.lowerBound(from));
  let top = 0;
  // Highest first: each row moves up past the rows still to move.
  for (const row of rows.reverse()) {
    const seq = row.seq + shift;
    await t.del('outbox', row.seq);
    await t.put('outbox', { ...row, seq, body: { ...row.body, seq } });
    const vid = row.body.visit && row.body.visit.id;
    if (vid) {
      const v = await t.get('visits', vid);
      if (v && v.seq === row.seq) await t.put('visits', { ...v, seq });
    }
    top = Math.max(top, seq);
  }
  if ((await t.meta('next_seq', 1)) <= top) await t.setMeta('next_seq', top + 1);
  return rows.length;
}

/** Syncer runs syncs for the app. */
export class Syncer {
  constructor(db, { onStatus, onRevoked, onChange, onUpdateNeeded } = {}) {
    this.db = db;
    this.onStatus = onStatus || (() => {});
    this.onRevoked = onRevoked || (() => {});
    this.onChange = onChange || (() => {});
    this.onUpdateNeeded = onUpdateNeeded || (() => {});
    this.running = false;
    this.failures = 0;
    this.timer = 0;
    this.blocked = false; // set while a new app version takes over
    this.line = '';
  }

  status(text) { this.line = text; this.onStatus(text, this.running); }

  async log(text, level = 'info') {
    try {
      await this.db.write(['log'], async (t) => {
        const n = await t.add('log', { at: new Date().toISOString(), level, text });
        if (n > LOG_KEEP) for (const k of await t.keys('log', IDBKeyRange.upperBound(n - LOG_KEEP))) await t.del('log', k);
      });
    } catch (_) { /* the log must never break a sync */ }
  }

  /** schedule plans the next automatic sync in ms. */
  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.sync({ auto: true }), ms);
  }

  backoff(e) {
    this.failures++;
    const base = Math.min(10 * 60 * 1000, 5000 * 2 ** (this.failures - 1));
    let ms = Math.round(base * (0.5 + Math.random()));
    if (e && e.retryAfterMs) ms = Math.max(ms, e.retryAfterMs);
    this.nextAt = Date.now() + ms;
    this.schedule(ms);
    return ms;
  }

  /**
   * sync runs push, pull and uploads once, holding the sync lock; if
   * another tab holds it, it returns 'busy' at once.
   */
  async sync({ auto = false } = {}) {
    if (this.blocked) return 'blocked';
    if (this.running) return 'running'; // this tab is already syncing
    if (!navigator.onLine) {
      this.status('离线：联网后自动同步');
      return 'offline';
    }
    const run = async (lock) => {
      if (!lock) { this.status('另一个窗口正在同步'); return 'busy'; }
      return this.runLocked(auto);
    };
    if (navigator.locks) return navigator.locks.request(LOCK_NAME, { ifAvailable: true }, run);
    return run(true);
  }

  async runLocked(auto) {
    const m = await this.db.metaAll();
    if (m.revoked) return 'revoked';
    if (!m.token) return 'not_enrolled';
    this.running = true;
    clearTimeout(this.timer);
    const stats = { pushed: 0, rejected: 0, ops: 0, uploaded: 0, bytes: 0 };
    try {
      this.status('同步中…');
      await this.log(auto ? '开始自动同步' : '开始同步');
      await this.push(m, stats);
      await this.pull(m, stats);
      if (stats.requeued) await this.push(m, stats);
      await this.uploads(m, stats);
      this.failures = 0;
      await this.db.setMeta('last_sync', new Date().toISOString());
      const text = `同步完成：上传记录 ${stats.pushed} 条${stats.rejected ? `（被拒 ${stats.rejected} 条）` : ''}，收到更新 ${stats.ops} 项，上传附件 ${stats.uploaded} 个（${fmtBytes(stats.bytes)}）`;
      await this.log(text);
      this.status(text);
      this.schedule(5 * 60 * 1000);
      return 'ok';
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        await this.db.setMeta('revoked', true);
        await this.log('服务器拒绝了本设备的令牌：设备已被停用', 'error');
        this.status('设备已被停用');
        this.onRevoked();
        return 'revoked';
      }
      if (e instanceof ApiError && e.status === 426) this.onUpdateNeeded();
      const ms = this.backoff(e);
      const text = `同步失败：${describe(e)}。${Math.round(ms / 1000)} 秒后重试`;
      await this.log(text, 'error');
      this.status(text);
      return 'error';
    } finally {
      this.running = false;
      this.onChange();
    }
  }

  async health() {
    return this.db.read(['outbox', 'uploads'], async (t) => {
      const first = await t.all('outbox', null, 1);
      const ups = (await t.all('uploads')).filter((u) => u.state !== 'done' && u.state !== 'failed');
      return {
        pending_mutations: await t.count('outbox'),
        pending_blobs: ups.length,
        pending_bytes: ups.reduce((a, u) => a + (u.size || 0), 0),
        oldest_pending: first.length ? first[0].created : undefined,
        app_version: APP_VERSION,
      };
    });
  }

  async push(m, stats) {
    const total = await this.db.read(['outbox'], (t) => t.count('outbox'));
    let done = 0;
    let renumbered = 0;
    let limit = START_BATCH; // grows on a good link (batch.js)
    for (let round = 0; round < 100000; round++) {
      const batch = takeBatch(await this.db.read(['outbox'], (t) => t.all('outbox', null, limit)));
      if (batch.length === 0) return;
      this.status(`上传记录 ${done}/${total}`);
      let resp;
      const sent = Date.now();
      try {
        resp = await call('/api/v1/sync/push', {
          protocol_version: PROTOCOL_VERSION, device_id: m.device_id,
          mutations: batch.map((r) => r.body), health: await this.health(),
        }, m.token);
      } catch (e) {
        if (!(e instanceof ApiError) || e.code !== 'sequence_reused' || renumbered >= 3) throw e;
        // The server applied these numbers from another copy of this
        // device (a restored backup): number the unsent mutations after
        // its last seq and push again (as mobileclient does).
        renumbered++;
        const from = Number(e.details.seq);
        const last = Number(e.details.last_seq);
        const n = await this.db.write(['outbox', 'meta', 'visits'], (t) => renumberOutbox(t, from, last));
        await this.log(`服务器已从本设备的另一份数据收到序号 ${from} 起的记录：${n} 条未上传的记录已改为从序号 ${last + 1} 起重新编号`, 'error');
        continue;
      }
      checkVersion(resp);
      const results = new Map((resp.results || []).map((r) => [r.seq, r]));
      let rejected = [];
      await this.db.write(['outbox', 'rejected', 'visits', 'uploads', 'meta', 'sent', 'households'], async (t) => {
        const refusedHH = [];
        for (const row of batch) {
          const r = results.get(row.seq);
          if (!r) continue;
          await t.put('sent', { ...row, status: r.status, answered: new Date().toISOString() });
          if (r.status === 'rejected') {
            await t.put('rejected', { seq: row.seq, kind: row.kind, body: row.body, code: r.code, message: r.message, at: new Date().toISOString() });
            rejected.push(r);
            if (row.kind.startsWith('household.')) refusedHH.push([row, r]);
            if (row.body.visit) {
              const v = await t.get('visits', row.body.visit.id);
              if (v) await t.put('visits', { ...v, rejected: { code: r.code, message: r.message } });
              for (const e of row.body.visit.evidence || []) {
                const u = await t.get('uploads', e.sha256);
                if (u && u.state !== 'done') await t.put('uploads', { ...u, state: 'failed', error: '记录被服务器拒绝，附件不再上传' });
              }
            }
          } else if (row.body.visit) {
            const v = await t.get('visits', row.body.visit.id);
            if (v) await t.put('visits', { ...v, pushed: true });
          }
          await t.del('outbox', row.seq);
        }
        for (const [row, r] of refusedHH) await settleRejected(t, row, r);
        await t.setMeta('last_seq', Math.max(resp.last_seq || 0, await t.meta('last_seq', 0)));
        await t.setMeta('hlc', maxHLC(await t.meta('hlc', ''), resp.server_hlc));
        const n = await t.count('sent');
        if (n > SENT_KEEP) for (const k of (await t.keys('sent')).slice(0, n - SENT_KEEP)) await t.del('sent', k);
      });
      done += results.size;
      stats.pushed += results.size;
      stats.rejected += rejected.length;
      for (const r of rejected) await this.log(`记录 #${r.seq} 被服务器拒绝：${r.code}：${r.message}`, 'error');
      if (results.size === 0) throw new Error('服务器的回答中没有这批记录的结果');
      limit = nextBatch(limit, batch.length, Date.now() - sent);
    }
  }

  async pull(m, stats) {
    let cursor = m.cursor || '';
    for (let page = 0; page < MAX_PULL_PAGES; page++) {
      this.status(`下载更新：第 ${page + 1} 页`);
      const resp = await call('/api/v1/sync/pull', {
        protocol_version: PROTOCOL_VERSION, device_id: m.device_id, cursor, max_bytes: PULL_MAX_BYTES,
      }, m.token);
      checkVersion(resp);
      const ops = resp.ops || [];
      const requeued = await this.db.write([...SCOPE_STORES, 'meta', 'sent', 'outbox'], async (t) => {
        await applyOps(t, ops);
        await overlayPending(t, ops);
        await t.setMeta('cursor', resp.cursor);
        await t.setMeta('hlc', maxHLC(await t.meta('hlc', ''), resp.server_hlc));
        return requeueLost(t, resp.last_seq);
      });
      if (requeued) {
        stats.requeued = (stats.requeued || 0) + requeued;
        await this.log(`服务器少了本设备已上传的 ${requeued} 条记录（服务器可能从备份恢复过），已重新放入待上传队列`, 'error');
      }
      stats.ops += ops.length;
      cursor = resp.cursor;
      if (!resp.has_more) return;
    }
  }

  /** uploads sends the evidence blobs the server lacks, once the outbox is empty. */
  async uploads(m, stats) {
    // A blob can only go up after its visit. The outbox and the uploads
    // are read in one transaction: a visit saved meanwhile (its outbox row
    // and upload rows are written together) is either in both or in
    // neither, so no upload of an unpushed visit is tried.
    const { pendingOutbox, all } = await this.db.read(['outbox', 'uploads'], async (t) => ({ pendingOutbox: await t.count('outbox'), all: await t.all('uploads') }));
    if (pendingOutbox > 0) return;
    if (m.wifi_only && navigator.connection && navigator.connection.type && navigator.connection.type !== 'wifi') {
      await this.log('设置为仅在 Wi-Fi 下上传照片，本次跳过');
      return;
    }
    const todo = all.filter((u) => u.state !== 'done' && u.state !== 'failed');
    if (todo.length === 0) return;
    const missing = new Set();
    for (let i = 0; i < todo.length; i += MISSING_BATCH) {
      const resp = await call('/api/v1/evidence/missing', { protocol_version: PROTOCOL_VERSION, sha256: todo.slice(i, i + MISSING_BATCH).map((u) => u.sha256) }, m.token);
      for (const s of resp.missing || []) missing.add(s);
    }
    const totalBytes = todo.filter((u) => missing.has(u.sha256)).reduce((a, u) => a + u.size, 0);
    let sentBefore = 0;
    let n = 0;
    for (const u of todo) {
      if (!missing.has(u.sha256)) {
        await this.markDone(u.sha256);
        continue;
      }
      n++;
      this.status(`上传附件 ${n}/${missing.size}，${fmtBytes(sentBefore)}/${fmtBytes(totalBytes)}`);
      const up = await this.tusUpload(m, u, (sent) => this.status(`上传附件 ${n}/${missing.size}，${fmtBytes(sentBefore + sent)}/${fmtBytes(totalBytes)}`));
      sentBefore += u.size;
      if (!up) continue;
      stats.uploaded++;
      stats.bytes += u.size;
    }
  }

  /**
   * markDone records that the server holds a blob (verified: it re-hashed
   * it) and frees the device's copy of the bytes; the photo row keeps its
   * hash, size and type.
   */
  async markDone(sha) {
    await this.db.write(['uploads', 'photos'], async (t) => {
      const u = await t.get('uploads', sha);
      if (u) await t.put('uploads', { ...u, state: 'done', done_at: new Date().toISOString() });
      const p = await t.get('photos', sha);
      if (p && p.blob) await t.put('photos', { ...p, blob: null, pruned: new Date().toISOString() });
    });
  }

  async markUpload(sha, patch) {
    await this.db.write(['uploads'], async (t) => {
      const u = await t.get('uploads', sha);
      if (u) await t.put('uploads', { ...u, ...patch });
    });
  }

  /**
   * tusUpload uploads one blob with tus-js-client, resuming a stored upload
   * URL. It reports whether the server now holds the blob; only then is
   * the device's copy freed. A blob the server refuses keeps its bytes:
   * it stays pending while its visit is one the server should know (not
   * yet applied there, or lost in a restore), else it is marked failed.
   */
  async tusUpload(m, u, progress) {
    const tus = globalThis.tus;
    if (!tus || !tus.Upload) throw new Error('上传组件没有加载');
    const photo = await this.db.read(['photos'], (t) => t.get('photos', u.sha256));
    if (!photo || !photo.blob) {
      await this.markUpload(u.sha256, { state: 'failed', error: '本机找不到这个附件' });
      return false;
    }
    const ext = { 'image/jpeg': '.jpg', 'image/png': '.png', 'application/pdf': '.pdf' }[photo.media_type] || '';
    const upload = new tus.Upload(photo.blob, {
      endpoint: location.origin + '/api/v1/uploads/',
      headers: { Authorization: 'Bearer ' + m.token },
      metadata: { filename: u.sha256 + ext, filetype: photo.media_type, sha256: u.sha256 },
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000],
      uploadSize: photo.blob.size,
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: false,
      fingerprint: async () => 'fieldsync-blob-' + u.sha256,
      urlStorage: new IDBUrlStorage(this.db),
      onShouldRetry: (err) => {
        const s = err && err.originalResponse ? err.originalResponse.getStatus() : 0;
        return s === 0 || s === 409 || s === 423 || s === 429 || s >= 500;
      },
    });
    const prev = await upload.findPreviousUploads();
    if (prev.length) {
      upload.resumeFromPreviousUpload(prev[0]);
      await this.log(`继续上传附件 ${u.sha256.slice(0, 12)}…（断点续传）`);
    }
    const stored = await new Promise((resolve, reject) => {
      upload.options.onProgress = (sent) => progress(sent);
      upload.options.onSuccess = () => resolve();
      upload.options.onError = (err) => {
        const s = err && err.originalResponse ? err.originalResponse.getStatus() : 0;
        let body = '';
        try { body = err.originalResponse ? err.originalResponse.getBody() : ''; } catch (_) { /* none */ }
        let code = '';
        let message = err && err.message ? err.message : String(err);
        try { const j = JSON.parse(body); code = j.code; message = j.message || message; } catch (_) { /* not JSON */ }
        const ra = err && err.originalResponse ? retryAfterMs(err.originalResponse.getHeader('Retry-After')) : 0;
        reject(new ApiError(s, code || 'upload', message, {}, ra));
      };
      upload.start();
    }).then(() => true, async (e) => {
      if (e.status === 401) throw e;
      if (e.status === 403 && await this.visitAwaited(u)) {
        await this.log(`附件 ${u.sha256.slice(0, 12)}… 所属的记录服务器还没有收到，下次同步再上传`);
        return false;
      }
      if (e.status === 403 || e.status === 413 || e.status === 422 || e.status === 415) {
        await this.markUpload(u.sha256, { state: 'failed', error: describe(e) });
        await this.log(`附件 ${u.sha256.slice(0, 12)}… 无法上传：${describe(e)}`, 'error');
        return false;
      }
      throw e;
    });
    if (!stored) return false;
    await this.markDone(u.sha256);
    await this.log(`附件 ${u.sha256.slice(0, 12)}…（${fmtBytes(u.size)}）已上传`);
    return true;
  }

  /**
   * visitAwaited reports whether the visit of upload u is one the server
   * should hold: kept on this device and not refused by the server.
   */
  async visitAwaited(u) {
    if (!u.visit_id) return false;
    const v = await this.db.read(['visits'], (t) => t.get('visits', u.visit_id));
    return !!v && !v.rejected;
  }
}

/**
 * IDBUrlStorage is tus-js-client's urlStorage kept in the uploads store:
 * an upload URL survives app and tablet restarts, keyed by the blob's
 * fingerprint ("fieldsync-blob-<sha256>").
 */
export class IDBUrlStorage {
  constructor(db) { this.db = db; }
  async findAllUploads() {
    const rows = await this.db.read(['uploads'], (t) => t.all('uploads'));
    return rows.filter((r) => r.tus).map((r) => ({ ...r.tus, urlStorageKey: r.sha256 }));
  }
  async findUploadsByFingerprint(fp) {
    const rows = await this.db.read(['uploads'], (t) => t.byIndex('uploads', 'fingerprint', fp));
    return rows.filter((r) => r.tus).map((r) => ({ ...r.tus, urlStorageKey: r.sha256 }));
  }
  async removeUpload(key) {
    await this.db.write(['uploads'], async (t) => {
      const r = await t.get('uploads', key);
      if (r) { delete r.tus; await t.put('uploads', r); }
    });
  }
  async addUpload(fp, upload) {
    const sha = fp.replace(/^fieldsync-blob-/, '');
    await this.db.write(['uploads'], async (t) => {
      const r = (await t.get('uploads', sha)) || { sha256: sha, state: 'pending', size: upload.size };
      await t.put('uploads', { ...r, fingerprint: fp, tus: { ...upload } });
    });
    return sha;
  }
}

/**
 * saveVisit stores a finished visit: the local copy, its outbox row (next
 * sequence number, fresh HLC) and the upload rows of its evidence, and
 * removes the draft, all in one transaction.
 */
export async function saveVisit(db, visit, draftID, localExtra = {}, redoSeq = null) {
  return db.write(['visits', 'outbox', 'meta', 'drafts', 'uploads', 'photos', 'rejected'], async (t) => {
    for (const e of visit.evidence || []) {
      const p = await t.get('photos', e.sha256);
      if (!p) throw new Error('附件丢失，请重新拍摄');
      const u = await t.get('uploads', e.sha256);
      // A file given up with a refused visit goes again with its corrected one.
      if (!u || u.state === 'failed') await t.put('uploads', { sha256: e.sha256, size: e.size, media_type: e.media_type, state: 'pending', visit_id: visit.id });
    }
    const seq = await enqueue(t, 'visit.create', 'visit', visit, nextHLC);
    await t.put('visits', { ...visit, ...localExtra, local: true, seq });
    if (draftID) await t.del('drafts', draftID);
    if (redoSeq != null) {
      // The refused visit this one corrects (see redoRoute in app.js).
      const r = await t.get('rejected', redoSeq);
      if (r) await t.put('rejected', { ...r, redone: visit.id });
    }
    return seq;
  });
}
