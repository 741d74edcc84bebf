// Household fields on the device: the editable schema with Chinese labels,
// the server's field checks (syncproto.CheckHouseholdFields) in JS, the
// change set of an edit, the local view (the server's copy with the
// unsent edits on top) and the Chinese text of conflicts. Pure functions
// (no DOM), so node's tests run them; overlayPending and settleRejected
// work inside an IndexedDB transaction wrapper (db.js Tx).

import { formatMessage } from './formcheck.js';
import { fmtTime, parseHLC } from './util.js';

export const MEMBER_PREFIX = 'member.';
export const MAX_FIELD_VALUE_BYTES = 4 << 10; // syncproto.MaxFieldValueBytes
export const MAX_HOUSEHOLD_FIELDS = 256; // syncproto.MaxHouseholdFields

const YES_NO = [['yes', '是'], ['no', '否']];

/**
 * HH_FIELDS are the fields the app edits, in screen order: syncproto's
 * HouseholdSchema (same names, labels and sensitive flags) plus the demo's
 * income_per_capita. kind: text, textarea, select or number.
 */
export const HH_FIELDS = Object.freeze([
  { name: 'head_name', label: '户主', sensitive: true, kind: 'text' },
  { name: 'poverty_status', label: '贫困状态', sensitive: true, kind: 'select',
    options: [['none', '一般户'], ['registered_poor', '建档立卡户'], ['lifted', '脱贫户'], ['returned', '返贫户'], ['marginal', '边缘易致贫户'], ['monitored', '监测户']] },
  { name: 'dibao_class', label: '低保类别', sensitive: true, kind: 'select', options: [['none', '无'], ['A', 'A 类'], ['B', 'B 类'], ['C', 'C 类']] },
  { name: 'wubao', label: '五保', kind: 'select', options: YES_NO },
  { name: 'pension', label: '养老保险', kind: 'select', options: YES_NO },
  { name: 'medical_insurance', label: '医疗保险', kind: 'select', options: YES_NO },
  { name: 'income_per_capita', label: '人均年收入（元）', kind: 'number' },
  { name: 'address', label: '地址', kind: 'text' },
  { name: 'phone', label: '电话', kind: 'text' },
  { name: 'id_card_no', label: '身份证号', kind: 'text' },
  { name: 'notes', label: '备注', kind: 'textarea' },
]);

const BY_NAME = new Map(HH_FIELDS.map((f) => [f.name, f]));

/** isSensitive mirrors syncproto.SensitiveField (location is sensitive too). */
export function isSensitive(name) {
  if (name === 'location') return true;
  const f = BY_NAME.get(name);
  return !!(f && f.sensitive);
}

/** validID mirrors syncproto.ValidID: a ULID or a UUID. */
export function validID(s) {
  if (typeof s !== 'string') return false;
  if (s.length === 26) return /^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$/.test(s);
  if (s.length === 36) return /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(s);
  return false;
}

/** validFieldName mirrors syncproto.ValidFieldName. */
export function validFieldName(name) {
  if (typeof name !== 'string') return false;
  if (name.startsWith(MEMBER_PREFIX)) return validID(name.slice(MEMBER_PREFIX.length));
  return /^[a-z][a-z0-9_]{0,63}$/.test(name);
}

const enc = new TextEncoder();
const isNull = (v) => v === null || v === undefined;
const isInt = (v) => Number.isInteger(v) && Math.abs(v) <= 2 ** 63;

/**
 * checkFields gives syncproto.CheckHouseholdFields' verdict on a change set
 * (field -> JSON value, null removes): [{field, code, message}], sorted by
 * field as Go sorts; message is the Chinese text for the field. An empty
 * array means the server accepts the values.
 */
export function checkFields(fields) {
  const names = Object.keys(fields || {});
  if (names.length > MAX_HOUSEHOLD_FIELDS) {
    return [{ field: '', code: 'validation_failed', message: `一户最多 ${MAX_HOUSEHOLD_FIELDS} 项信息` }];
  }
  const errs = [];
  const bad = (field, code) => errs.push({ field, code, message: formatMessage(code) });
  for (const name of names) {
    const v = fields[name];
    if (!validFieldName(name)) { bad(name, 'invalid_field_name'); continue; }
    const text = v === undefined ? 'null' : JSON.stringify(v);
    if (text === undefined) { bad(name, 'not_json'); continue; }
    if (enc.encode(text).length > MAX_FIELD_VALUE_BYTES) { bad(name, 'value_too_large'); continue; }
    if (isNull(v)) continue;
    if (name === 'location') {
      const ok = typeof v === 'object' && !Array.isArray(v) && Number.isFinite(v.lon ?? 0) && Number.isFinite(v.lat ?? 0) &&
        (v.lon === undefined || typeof v.lon === 'number') && (v.lat === undefined || typeof v.lat === 'number') &&
        Math.abs(v.lon ?? 0) <= 180 && Math.abs(v.lat ?? 0) <= 90;
      if (!ok) bad(name, 'bad_location');
    } else if (name.startsWith(MEMBER_PREFIX)) {
      if (!memberOK(v)) bad(name, 'bad_member');
    }
  }
  errs.sort((a, b) => (a.field < b.field ? -1 : a.field > b.field ? 1 : 0));
  return errs;
}

// memberOK: the value decodes into syncproto.Member and has a name.
function memberOK(m) {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
  const str = (x) => x === undefined || x === null || typeof x === 'string';
  if (!str(m.name) || !str(m.relation) || !str(m.id_card_no)) return false;
  if (!(m.birth_year === undefined || m.birth_year === null || isInt(m.birth_year))) return false;
  return typeof m.name === 'string' && m.name.trim() !== '';
}

/** canon writes a JSON value with sorted object keys, for comparing values. */
export function canon(v) {
  if (v === undefined) return 'null';
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(canon).join(',') + ']';
  return '{' + Object.keys(v).sort().filter((k) => v[k] !== undefined).map((k) => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
}

/**
 * diffFields is the change set that takes fields `before` to `after`: the
 * fields whose value changed, and null for each field that is gone.
 */
export function diffFields(before, after) {
  const out = {};
  for (const [k, v] of Object.entries(after || {})) {
    if (isNull(v)) { if (!isNull((before || {})[k])) out[k] = null; continue; }
    if (canon(v) !== canon((before || {})[k])) out[k] = v;
  }
  for (const k of Object.keys(before || {})) {
    if (!(k in (after || {})) && !isNull(before[k])) out[k] = null;
  }
  return out;
}

/** applyFields returns fields with a change set applied (null removes). */
export function applyFields(fields, changes) {
  const out = { ...(fields || {}) };
  for (const [k, v] of Object.entries(changes || {})) {
    if (isNull(v)) delete out[k]; else out[k] = v;
  }
  return out;
}

/**
 * parseField turns what was typed into a field's value: undefined for an
 * empty input (the field is removed), a number for number fields (or an
 * error code), the trimmed text otherwise.
 */
export function parseField(kind, s) {
  const t = String(s ?? '').trim();
  if (t === '') return { value: undefined };
  if (kind === 'number') {
    if (!/^-?(\d+\.?\d*|\.\d+)$/.test(t) || !Number.isFinite(Number(t))) return { error: 'not_number' };
    return { value: Number(t) };
  }
  return { value: t };
}

/**
 * memberValue builds a member field's value from the typed name, relation
 * and birth year; an error code when the year is not a whole number.
 */
export function memberValue(name, relation, birthYear) {
  const m = { name: String(name ?? '').trim() };
  const rel = String(relation ?? '').trim();
  if (rel) m.relation = rel;
  const y = String(birthYear ?? '').trim();
  if (y) {
    if (!/^\d{4}$/.test(y)) return { error: 'bad_member', message: '出生年份须是四位数字' };
    m.birth_year = Number(y);
  }
  if (!m.name) return { error: 'bad_member', value: m };
  return { value: m };
}

/** pendingFor lists the outbox's household mutations for a household, in order. */
export function pendingFor(outbox, id) {
  return outbox.filter((r) => (r.kind === 'household.update' && r.body.household_update && r.body.household_update.household_id === id) ||
    (r.kind === 'household.create' && r.body.household && r.body.household.id === id)).sort((a, b) => a.seq - b.seq);
}

/**
 * viewOf is the local view of a household: the server's fields with the
 * unsent mutations on top, in sequence order.
 */
export function viewOf(serverFields, pending) {
  let f = { ...(serverFields || {}) };
  for (const r of pending) {
    if (r.kind === 'household.create') f = applyFields(f, r.body.household.fields);
    else f = applyFields(f, r.body.household_update.fields);
  }
  return f;
}

/**
 * overlayPending puts the unsent household edits back on top of the
 * households a pulled page just replaced with the server's copy (inside
 * the page's transaction t, which covers households and outbox), so an
 * edit shows until the server has it.
 */
export async function overlayPending(t, ops) {
  const ids = new Set();
  for (const op of ops) if (op.op === 'put' && op.type === 'household' && op.household) ids.add(op.household.id);
  if (ids.size === 0) return;
  const outbox = (await t.all('outbox')).filter((r) => r.kind === 'household.update' || r.kind === 'household.create');
  if (outbox.length === 0) return;
  for (const id of ids) {
    const pend = pendingFor(outbox, id);
    if (pend.length === 0) continue;
    const hh = await t.get('households', id);
    if (!hh) continue;
    await t.put('households', { ...hh, server_fields: hh.fields, fields: viewOf(hh.fields, pend) });
  }
}

/**
 * settleRejected undoes the local effect of a household mutation the
 * server refused (inside the push's transaction t, over households and
 * outbox, after the answered rows left the outbox): an edit's values go
 * back to the server's copy plus the edits still unsent; a created
 * household is marked refused with the reason.
 */
export async function settleRejected(t, row, result) {
  const b = row.body || {};
  const id = b.household_update ? b.household_update.household_id : b.household ? b.household.id : '';
  if (!id) return;
  const hh = await t.get('households', id);
  if (!hh) return;
  const why = { code: result.code || '', message: result.message || '' };
  if (row.kind === 'household.create') {
    await t.put('households', { ...hh, rejected: why });
    return;
  }
  const pend = pendingFor(await t.all('outbox'), id);
  const base = hh.server_fields || hh.fields;
  const next = { ...hh, fields: viewOf(base, pend), rejected_edit: why };
  if (pend.length === 0) delete next.server_fields;
  await t.put('households', next);
}

/** Chinese for the syncproto error codes a household mutation can get. */
export const CODE_ZH = Object.freeze({
  out_of_scope: '不在本设备负责的范围内（负责片区可能已调整）',
  unknown_entity: '服务器上没有这一户或这个地点',
  duplicate_id: '编号与服务器上已有的农户重复',
  gone: '这一户已在服务器上删除',
  validation_failed: '填写的内容不符合要求',
  bad_request: '记录格式不对',
  stale_base_version: '基于的版本已过时',
});

/** rejectText is one line of Chinese for a refused mutation. */
export function rejectText(code, message) {
  const zh = CODE_ZH[code];
  return (zh ? zh + '：' : '') + `${code || ''}${message ? '：' + message : ''}`;
}

/** fieldLabel names a household field in Chinese; fields (optional) give member names. */
export function fieldLabel(name, fields) {
  if (name === 'location') return '位置';
  if (name.startsWith(MEMBER_PREFIX)) {
    const m = fields && fields[name];
    return '家庭成员' + (m && m.name ? ' ' + m.name : '');
  }
  const f = BY_NAME.get(name);
  return f ? f.label : name;
}

/** fmtValue shows a household field's value in Chinese. */
export function fmtValue(name, v) {
  if (isNull(v)) return '（空）';
  const f = BY_NAME.get(name);
  if (f && f.options) {
    const o = f.options.find(([k]) => k === v);
    if (o) return o[1];
  }
  if (name === 'location' && typeof v === 'object') return `经度 ${v.lon}，纬度 ${v.lat}`;
  if (name.startsWith(MEMBER_PREFIX) && typeof v === 'object') {
    const parts = [v.relation, v.birth_year ? `${v.birth_year} 年生` : ''].filter(Boolean);
    return (v.name || '') + (parts.length ? `（${parts.join('，')}）` : '');
  }
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

const STATE_ZH = { open: '待督导处理', auto_resolved: '已按修改时间先后自动处理', resolved: '督导已处理' };

/**
 * conflictText describes a conflict record in Chinese: which field, the
 * value kept and the value not taken, who made the latter and when
 * (Asia/Shanghai, zone shown), and its state.
 */
export function conflictText(c, fields) {
  const hlc = parseHLC(c.losing_hlc);
  const who = c.losing_user ? c.losing_user : '';
  const dev = c.losing_device ? `设备 ${c.losing_device.slice(0, 8)}` : '';
  return {
    field: fieldLabel(c.field, fields),
    kept: fmtValue(c.field, c.kept_value),
    losing: fmtValue(c.field, c.losing_value),
    by: [who, dev].filter(Boolean).join('，') || '未知',
    when: hlc ? fmtTime(hlc.ms) : '—',
    recorded: fmtTime(c.created_at),
    state: STATE_ZH[c.state] || c.state || '',
    open: c.state === 'open',
    sensitive: !!c.sensitive,
  };
}
