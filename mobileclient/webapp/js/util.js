// Small helpers shared by the app's modules: DOM building without
// innerHTML, Beijing-time formatting, ids, the hybrid logical clock and
// SHA-256.

/** h builds an element: h('p', {class: 'x', onclick: fn}, 'text', child). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const bjFmt = new Intl.DateTimeFormat('zh-CN', {
  timeZone: 'Asia/Shanghai', year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
});

/** fmtTime shows a time in Asia/Shanghai: "2026-12-06 14:03 北京时间". */
export function fmtTime(t) {
  if (!t) return '—';
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return '—';
  const p = Object.fromEntries(bjFmt.formatToParts(d).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute} 北京时间`;
}

/** todayBJ is today's date in Asia/Shanghai, "YYYY-MM-DD". */
export function todayBJ(now = new Date()) {
  const p = Object.fromEntries(bjFmt.formatToParts(now).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}`;
}

/** fmtAge says how long ago t was, in Chinese ("3 小时"). */
export function fmtAge(t, now = Date.now()) {
  const ms = Math.max(0, now - new Date(t).getTime());
  const m = Math.floor(ms / 60000);
  if (m < 1) return '不到 1 分钟';
  if (m < 60) return `${m} 分钟`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} 小时`;
  return `${Math.floor(hrs / 24)} 天`;
}

/** fmtBytes writes a byte count for people. */
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

/** newID makes a UUIDv7 (time-ordered), an id syncproto.ValidID accepts. */
export function newID(now = Date.now()) {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  let ms = BigInt(now);
  for (let i = 5; i >= 0; i--) { b[i] = Number(ms & 0xffn); ms >>= 8n; }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** parseHLC reads "<13-digit ms>-<4 hex>"; null if it is not one. */
export function parseHLC(s) {
  if (typeof s !== 'string' || !/^\d{13}-[0-9a-fA-F]{4}$/.test(s)) return null;
  return { ms: Number(s.slice(0, 13)), c: parseInt(s.slice(14), 16) };
}

export function fmtHLC(t) {
  return String(t.ms).padStart(13, '0') + '-' + t.c.toString(16).padStart(4, '0');
}

/**
 * nextHLC advances the clock: last is the last HLC issued or observed
 * (string or ''), now the wall clock in ms. Returns the new HLC string.
 */
export function nextHLC(last, now = Date.now()) {
  const l = parseHLC(last) || { ms: 0, c: 0 };
  if (now > l.ms) return fmtHLC({ ms: now, c: 0 });
  if (l.c >= 0xffff) return fmtHLC({ ms: l.ms + 1, c: 0 });
  return fmtHLC({ ms: l.ms, c: l.c + 1 });
}

/** maxHLC returns the later of two HLC strings (either may be ''). */
export function maxHLC(a, b) {
  if (!parseHLC(a)) return parseHLC(b) ? b : '';
  if (!parseHLC(b)) return a;
  return a >= b ? a : b; // the wire form sorts like the clock
}

/** sha256Hex hashes a Blob or ArrayBuffer with WebCrypto. */
export async function sha256Hex(data) {
  const buf = data instanceof Blob ? await data.arrayBuffer() : data;
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
  return [...d].map((v) => v.toString(16).padStart(2, '0')).join('');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** debounce delays fn until calls stop for ms. */
export function debounce(fn, ms) {
  let t = 0;
  const d = (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  d.flush = (...args) => { clearTimeout(t); return fn(...args); };
  d.cancel = () => clearTimeout(t);
  return d;
}

function inRing(lon, lat, ring) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if ((yi > lat) !== (yj > lat) && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/**
 * inGeometry reports whether lon/lat lies inside a GeoJSON Polygon or
 * MultiPolygon (holes excluded); null when the geometry is of another kind.
 */
export function inGeometry(lon, lat, g) {
  if (!g || !Array.isArray(g.coordinates)) return null;
  const inPoly = (rings) => rings.length > 0 && inRing(lon, lat, rings[0]) && !rings.slice(1).some((r) => inRing(lon, lat, r));
  if (g.type === 'Polygon') return inPoly(g.coordinates);
  if (g.type === 'MultiPolygon') return g.coordinates.some(inPoly);
  return null;
}
