// IndexedDB storage of the field app: the scope copy (places, forms,
// households, visits, tasks, conflicts), the outbox, drafts, photos (Blobs)
// and the upload state, plus meta (device id and token, server, user,
// cursor, sequence numbers, the clock).
//
// The schema is versioned: MIGRATIONS[n] takes the database from version n
// to n+1 and never drops or rewrites outbox, drafts or photos. Every write
// that belongs together (a visit and its outbox row; a pulled page and its
// cursor) runs in one transaction.

export const DB_NAME = 'fieldsync';

/** The schema, one step per version. Index i upgrades version i to i+1. */
export const MIGRATIONS = [
  // 0 -> 1
  (db) => {
    db.createObjectStore('meta', { keyPath: 'k' });
    db.createObjectStore('places', { keyPath: 'code' });
    const hh = db.createObjectStore('households', { keyPath: 'id' });
    hh.createIndex('place', 'place_code');
    const forms = db.createObjectStore('forms', { keyPath: 'key' });
    forms.createIndex('id', 'id');
    const visits = db.createObjectStore('visits', { keyPath: 'id' });
    visits.createIndex('household', 'household_id');
    const tasks = db.createObjectStore('tasks', { keyPath: 'id' });
    tasks.createIndex('household', 'household_id');
    const conflicts = db.createObjectStore('conflicts', { keyPath: 'id' });
    conflicts.createIndex('household', 'household_id');
    // Outbox rows are keyed by the device's own sequence number, so they
    // are read back in push order.
    db.createObjectStore('outbox', { keyPath: 'seq' });
    // Mutations the server refused, with its reason, for the worker.
    db.createObjectStore('rejected', { keyPath: 'seq' });
    db.createObjectStore('drafts', { keyPath: 'id' });
    db.createObjectStore('photos', { keyPath: 'sha256' });
    // tus state per blob: {sha256, fingerprint, url, state, ...}.
    const up = db.createObjectStore('uploads', { keyPath: 'sha256' });
    up.createIndex('fingerprint', 'fingerprint');
    db.createObjectStore('log', { keyPath: 'n', autoIncrement: true });
  },
  // 1 -> 2: answered mutations are kept (bounded), so that those a server
  // restored from a backup has lost can be queued again (pull's last_seq).
  (db) => {
    db.createObjectStore('sent', { keyPath: 'seq' });
  },
];

export const DB_VERSION = MIGRATIONS.length;

/** The stores a pull's "reset" clears (never outbox, drafts, photos, uploads). */
export const SCOPE_STORES = ['places', 'households', 'forms', 'visits', 'tasks', 'conflicts'];

/** upgrade runs the migrations from oldVersion to newVersion. */
export function upgrade(db, tx, oldVersion, newVersion) {
  for (let v = oldVersion; v < newVersion; v++) MIGRATIONS[v](db, tx);
}

/** QuotaError is thrown when the device's storage is full; nothing was written. */
export class QuotaError extends Error {
  constructor(cause) {
    super('设备存储空间已满，本次保存未完成，已有数据没有丢失。请先同步上传照片，或在系统设置中清理空间后再试。');
    this.name = 'QuotaError';
    this.cause = cause;
  }
}

function isQuota(err) {
  return !!err && (err.name === 'QuotaExceededError' || (err.inner && err.inner.name === 'QuotaExceededError'));
}

function req2p(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/** Tx wraps one IndexedDB transaction with promise helpers. */
class Tx {
  constructor(t) { this.t = t; }
  store(name) { return this.t.objectStore(name); }
  get(store, key) { return req2p(this.store(store).get(key)); }
  put(store, value) { return req2p(this.store(store).put(value)); }
  add(store, value) { return req2p(this.store(store).add(value)); }
  del(store, key) { return req2p(this.store(store).delete(key)); }
  clear(store) { return req2p(this.store(store).clear()); }
  count(store) { return req2p(this.store(store).count()); }
  all(store, query, count) { return req2p(this.store(store).getAll(query, count)); }
  keys(store, query) { return req2p(this.store(store).getAllKeys(query)); }
  byIndex(store, index, query) { return req2p(this.store(store).index(index).getAll(query)); }
  keysByIndex(store, index, query) { return req2p(this.store(store).index(index).getAllKeys(query)); }
  async meta(k, dflt) {
    const r = await this.get('meta', k);
    return r === undefined ? dflt : r.v;
  }
  setMeta(k, v) { return this.put('meta', { k, v }); }
}

/** DB is the app's open database. */
export class DB {
  constructor(idb) {
    this.idb = idb;
    // Another tab opened a newer version: let it upgrade, then reload.
    idb.onversionchange = () => {
      idb.close();
      if (typeof this.onversionchange === 'function') this.onversionchange();
    };
  }

  /**
   * tx runs fn(tx) in one transaction over stores and resolves with fn's
   * result once the transaction committed. If fn throws, or the
   * transaction aborts, nothing is written. A full disk rejects with
   * QuotaError.
   */
  tx(stores, mode, fn) {
    return new Promise((resolve, reject) => {
      let t;
      try {
        t = this.idb.transaction(stores, mode, { durability: 'strict' });
      } catch (e) {
        reject(e);
        return;
      }
      let result;
      let failed = null;
      t.oncomplete = () => resolve(result);
      t.onabort = () => {
        const e = failed || t.error;
        reject(isQuota(e) ? new QuotaError(e) : (e || new Error('事务已中止')));
      };
      Promise.resolve().then(() => fn(new Tx(t))).then((r) => { result = r; }, (e) => {
        failed = e;
        try { t.abort(); } catch (_) { /* already finished */ }
      });
    });
  }

  read(stores, fn) { return this.tx(stores, 'readonly', fn); }
  write(stores, fn) { return this.tx(stores, 'readwrite', fn); }

  getMeta(k, dflt) { return this.read(['meta'], (t) => t.meta(k, dflt)); }
  setMeta(k, v) { return this.write(['meta'], (t) => t.setMeta(k, v)); }

  async metaAll() {
    const rows = await this.read(['meta'], (t) => t.all('meta'));
    return Object.fromEntries(rows.map((r) => [r.k, r.v]));
  }

  close() { this.idb.close(); }
}

/** openDB opens (and upgrades) the database. */
export function openDB(name = DB_NAME, version = DB_VERSION) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(name, version);
    r.onupgradeneeded = (ev) => upgrade(r.result, r.transaction, ev.oldVersion, ev.newVersion ?? version);
    r.onsuccess = () => resolve(new DB(r.result));
    r.onerror = () => reject(r.error);
    r.onblocked = () => reject(new Error('数据库升级被另一个打开的页面阻止，请关闭其他标签页后重试。'));
  });
}

/**
 * enqueue adds a mutation to the outbox inside t (which must cover meta and
 * outbox): the next per-device sequence number and a fresh HLC, written in
 * the same transaction as the change itself. payloadKey is the syncproto
 * payload field ("visit", "household_update", ...).
 */
export async function enqueue(t, kind, payloadKey, payload, nextHLC) {
  const seq = await t.meta('next_seq', 1);
  const hlc = nextHLC(await t.meta('hlc', ''));
  const body = { seq, kind, hlc, [payloadKey]: payload };
  await t.put('outbox', { seq, kind, hlc, body, created: new Date().toISOString(), tries: 0 });
  await t.setMeta('next_seq', seq + 1);
  await t.setMeta('hlc', hlc);
  return seq;
}

/** storageInfo asks for persistent storage once and reports usage. */
export async function storageInfo(askPersist) {
  const out = { persisted: null, usage: null, quota: null };
  if (navigator.storage) {
    try {
      out.persisted = await navigator.storage.persisted();
      if (!out.persisted && askPersist && navigator.storage.persist) out.persisted = await navigator.storage.persist();
    } catch (_) { /* not supported */ }
    try {
      const e = await navigator.storage.estimate();
      out.usage = e.usage; out.quota = e.quota;
    } catch (_) { /* not supported */ }
  }
  return out;
}
