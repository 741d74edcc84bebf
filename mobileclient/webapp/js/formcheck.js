// formcheck.js: the field app's form validation, giving exactly the
// verdicts of the server's syncproto (FormDef.ValidateAnswers, MissingSlots,
// EvidenceSlot.Accepts and Check in syncproto/form.go). A plain ES module
// with no dependencies and no build step; it runs in Chromium and in
// node >= 18. The shared vectors in syncproto/testdata/vectors prove the two
// agree (mobileclient/webapp/test/formcheck.test.mjs runs them here, and
// syncproto's TestVectors_Go runs them in Go).
//
// Numbers. The server judges the JSON text it receives: an integer answer
// written 3.0 or 1e3 is refused, 9007199254740993 is out of range, -0 is 0.
// The app gives answers in one of two ways, both judged as the server will:
//
//   - validateAnswers(form, answers) with plain values (numbers, strings,
//     arrays, objects) judges them as JSON.stringify(answers) would send
//     them: 3 is sent as 3, -0 as 0, 1e21 as 1e+21 (so not an integer),
//     NaN and Infinity as null (so "required"), undefined keys not at all.
//     A number may also be a JSONNumber (its literal text is judged, and
//     stringifyJSON sends that text unchanged) or a BigInt (sent as its
//     digits by stringifyJSON; JSON.stringify cannot send BigInts).
//   - validateAnswersJSON(form, text) judges the exact JSON text the app
//     is about to send (parsed with parseJSON, which keeps number
//     literals as JSONNumber).
//
// Strings are judged as the server decodes them: a lone UTF-16 surrogate
// counts as one U+FFFD. Lengths are in Unicode code points. The form is the
// FormDef JSON as the server serves it (lower-case keys, as encoded by Go).
//
// Results: validateAnswers returns [] when every answer is good, otherwise
// one {field, code, message} per bad field, sorted by field name (code
// point order, as Go sorts). code is the server's syncproto.FieldCode
// (the same code a rejected visit carries in its "fields"); message is the
// Simplified Chinese text to show next to the field, from messagesZh.

/** MaxTextRunes caps a text answer whose field sets no max (syncproto.MaxTextRunes). */
export const MAX_TEXT_RUNES = 10000;
/** The largest magnitude of an integer answer, 2^53-1 (syncproto.MaxSafeInteger). */
export const MAX_SAFE_INTEGER = 9007199254740991;
const MAX_SAFE_BIG = 9007199254740991n;
const MAX_DEPTH = 1000; // nesting limit of parseJSON and of answers given as values

/**
 * Chinese message templates for every syncproto.FieldCode; {min} and {max}
 * are the field's bounds. Unknown codes (a newer server) use messagesZh.unknown.
 */
export const messagesZh = Object.freeze({
  required: '必填',
  unknown_field: '表单中没有这一项',
  unknown_type: '不认识的字段类型',
  not_string: '应填文字',
  too_short: '至少 {min} 个字',
  too_long: '最多 {max} 个字',
  not_integer: '请填整数',
  integer_out_of_range: '整数太大',
  not_number: '请填数字',
  not_finite: '数字太大',
  below_min: '不能小于 {min}',
  above_max: '不能大于 {max}',
  not_a_date: '请填真实日期，格式为 年-月-日（如 2026-03-01）',
  unknown_choice: '不是可选的选项',
  not_string_array: '请从选项中选择',
  duplicate_choice: '同一选项选了两次',
  too_few: '至少选 {min} 项',
  too_many: '最多选 {max} 项',
  bad_geopoint: '位置格式不对',
  geopoint_unknown_key: '位置中有多余的内容',
  geopoint_missing: '缺少经度或纬度',
  geopoint_not_number: '经纬度、精度和海拔须是数字',
  lon_out_of_range: '经度须在 -180 到 180 之间',
  lat_out_of_range: '纬度须在 -90 到 90 之间',
  negative_accuracy: '定位精度不能是负数',
  not_sha256: '附件标识无效，请重新拍摄或选择',
  invalid_field_name: '字段名无效',
  value_too_large: '内容太长',
  not_json: '内容格式不对',
  bad_location: '位置须是有效的经纬度',
  bad_member: '家庭成员须有姓名',
  unknown: '填写有误',
});

/** Chinese text for every syncproto.FormCode (checkFormError). */
export const formMessagesZh = Object.freeze({
  too_large: '表单定义太大',
  decode: '表单定义格式不对',
  missing: '缺少表单定义',
  bad_id: '表单编号无效',
  bad_version: '表单版本无效',
  empty_title: '表单缺少标题',
  no_fields_or_slots: '表单没有任何题目或附件',
  bad_max_accuracy: '定位精度要求无效',
  bad_field_name: '题目名称无效',
  duplicate_field: '题目名称重复',
  unknown_field_type: '题目类型不认识',
  empty_field_label: '题目缺少标题',
  no_choices: '选择题没有选项',
  bad_choice_value: '选项的值无效',
  duplicate_choice_value: '选项的值重复',
  empty_choice_label: '选项缺少文字',
  choices_not_allowed: '只有选择题可以有选项',
  bounds_not_allowed: '这种题目不能设置上下限',
  bound_not_finite: '上下限须是有限的数字',
  bad_count_bound: '长度或项数的上下限须是非负整数',
  min_above_max: '下限大于上限',
  bad_slot_name: '附件名称无效',
  duplicate_slot: '附件名称重复',
  empty_slot_label: '附件缺少标题',
  bad_slot_count: '附件数量要求无效',
  bad_media_type: '附件文件类型无效',
  bad_step_name: '审核步骤名称无效',
  duplicate_step: '审核步骤名称重复',
  empty_step_label: '审核步骤缺少标题',
  no_roles: '审核步骤没有指定角色',
  unknown_role: '审核角色不认识',
  unknown_level: '审核层级不认识',
  level_order: '审核层级顺序不对',
  unknown: '表单定义无效',
});

/** A JSON number kept as its literal text, so that 3.0, 1e3 and 9007199254740993 survive. */
export class JSONNumber {
  constructor(text) {
    if (typeof text !== 'string' || !NUMBER_RE.test(text)) {
      throw new SyntaxError(`not a JSON number: ${text}`);
    }
    this.text = text;
    Object.freeze(this);
  }
  toString() { return this.text; }
  valueOf() { return Number(this.text); }
  toJSON() { return Number(this.text); } // JSON.stringify can only send the value
}

const NUMBER_RE = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;

// ---------------------------------------------------------------------------
// JSON text

/**
 * parseJSON parses JSON text as Go's encoding/json does: strict RFC 8259,
 * numbers kept as JSONNumber, objects as null-prototype objects (so a
 * "__proto__" key is an ordinary key; a repeated key keeps its last value),
 * lone surrogates (escaped or not) read as U+FFFD. It throws SyntaxError.
 */
export function parseJSON(text) {
  if (typeof text !== 'string') throw new TypeError('parseJSON: text must be a string');
  let i = 0;
  const n = text.length;
  const fail = (what) => { throw new SyntaxError(`JSON: ${what} at offset ${i}`); };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const str = () => {
    i++; // opening quote
    let out = '';
    let start = i;
    for (;;) {
      if (i >= n) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return wellFormed(out);
      }
      if (c < 0x20) fail('control character in string');
      if (c !== 0x5c) { i++; continue; }
      out += text.slice(start, i);
      const e = text[i + 1];
      i += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const h = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) fail('bad \\u escape');
          out += String.fromCharCode(parseInt(h, 16));
          i += 4;
          break;
        }
        default: i -= 1; fail('bad escape');
      }
      start = i;
    }
  };
  const num = () => {
    const m = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
    m.lastIndex = i;
    const r = m.exec(text);
    if (!r) fail('bad number');
    i += r[0].length;
    return new JSONNumber(r[0]);
  };
  const lit = (word, value) => {
    if (text.startsWith(word, i)) { i += word.length; return value; }
    return fail('unexpected character');
  };
  const value = (depth) => {
    if (depth > MAX_DEPTH) fail('nested too deeply');
    ws();
    if (i >= n) fail('unexpected end');
    const c = text[i];
    if (c === '{') {
      i++;
      const obj = Object.create(null);
      ws();
      if (text[i] === '}') { i++; return obj; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key');
        const k = str();
        ws();
        if (text[i] !== ':') fail('expected :');
        i++;
        obj[k] = value(depth + 1);
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return obj; }
        fail('expected , or }');
      }
    }
    if (c === '[') {
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') { i++; return arr; }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return arr; }
        fail('expected , or ]');
      }
    }
    if (c === '"') return str();
    if (c === '-' || (c >= '0' && c <= '9')) return num();
    if (c === 't') return lit('true', true);
    if (c === 'f') return lit('false', false);
    if (c === 'n') return lit('null', null);
    return fail('unexpected character');
  };
  const v = value(0);
  ws();
  if (i !== n) fail('trailing data');
  return v;
}

/**
 * stringifyJSON is JSON.stringify (no replacer, no indent) that writes a
 * JSONNumber as its literal text and a BigInt as its digits, so that what
 * the app validated is what the server receives.
 */
export function stringifyJSON(value) {
  const v = toWire(value, 0);
  return v === undefined ? undefined : write(v);
  function write(x) {
    if (x === null) return 'null';
    if (x instanceof JSONNumber) return x.text;
    if (typeof x === 'string' || typeof x === 'boolean') return JSON.stringify(x);
    if (Array.isArray(x)) return '[' + x.map(write).join(',') + ']';
    return '{' + [...x].map(([k, e]) => JSON.stringify(k) + ':' + write(e)).join(',') + '}';
  }
}

// toWire turns a value into what JSON.stringify would send, with numbers as
// JSONNumber, strings well formed, objects as Maps; undefined means "not
// sent" (undefined, functions, symbols).
function toWire(v, depth, key = '') {
  if (depth > MAX_DEPTH) throw new RangeError('formcheck: answers nested too deeply');
  if (v !== null && typeof v === 'object' && !(v instanceof JSONNumber) && typeof v.toJSON === 'function') {
    v = v.toJSON(key);
  }
  if (v instanceof Number || v instanceof String || v instanceof Boolean) v = v.valueOf();
  if (v === null) return null;
  if (v instanceof JSONNumber) return v;
  switch (typeof v) {
    case 'undefined': case 'function': case 'symbol': return undefined;
    case 'boolean': return v;
    case 'string': return wellFormed(v);
    case 'number': return Number.isFinite(v) ? new JSONNumber(JSON.stringify(v)) : null;
    case 'bigint': return new JSONNumber(v.toString());
  }
  if (Array.isArray(v)) {
    return v.map((e, idx) => {
      const w = toWire(e, depth + 1, String(idx));
      return w === undefined ? null : w;
    });
  }
  const m = new Map();
  const entries = v instanceof Map ? [...v.entries()] : Object.keys(v).map((k) => [k, v[k]]);
  for (const [k, e] of entries) {
    const w = toWire(e, depth + 1, String(k));
    if (w !== undefined) m.set(wellFormed(String(k)), w);
  }
  return m;
}

// wellFormed replaces lone surrogates by U+FFFD, as Go's decoder does.
function wellFormed(s) {
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

// compareCodePoints orders strings as Go's strings.Compare orders their
// UTF-8 bytes (code point order, not UTF-16 unit order).
function compareCodePoints(a, b) {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done === y.done ? 0 : x.done ? -1 : 1;
    const cx = x.value.codePointAt(0);
    const cy = y.value.codePointAt(0);
    if (cx !== cy) return cx < cy ? -1 : 1;
  }
}

function codePointCount(s) {
  let k = 0;
  for (const _ of s) k++; // eslint-disable-line no-unused-vars
  return k;
}

const hasOwn = (o, k) => Object.prototype.hasOwnProperty.call(o, k); // Object.hasOwn needs Chrome 93
const num = (x) => (x instanceof JSONNumber ? Number(x.text) : x);
const has = (x) => x !== undefined && x !== null;

// ---------------------------------------------------------------------------
// Answers

/**
 * validateAnswers checks a visit's answers (field name → value) against
 * the form, as the server will judge JSON.stringify(answers) (or
 * stringifyJSON(answers)). It returns [] or [{field, code, message}].
 */
export function validateAnswers(form, answers) {
  if (answers === null || answers === undefined) answers = {};
  if (typeof answers !== 'object' || Array.isArray(answers) || answers instanceof JSONNumber) {
    throw new TypeError('validateAnswers: answers must be an object');
  }
  return judge(form, toWire(answers, 0));
}

/**
 * validateAnswersJSON checks answers given as the exact JSON text (an
 * object, or null) that will be sent. It throws SyntaxError on bad JSON
 * and TypeError when the text is not an object.
 */
export function validateAnswersJSON(form, text) {
  const v = parseJSON(text);
  if (v === null) return judge(form, new Map());
  if (typeof v !== 'object' || Array.isArray(v) || v instanceof JSONNumber) {
    throw new TypeError('validateAnswersJSON: answers must be a JSON object');
  }
  return judge(form, toWire(v, 0));
}

function judge(form, answers) {
  const fields = Array.isArray(form?.fields) ? form.fields : [];
  const names = new Set(fields.map((fd) => wellFormed(String(fd?.name ?? ''))));
  const errs = [];
  for (const k of answers.keys()) {
    if (!names.has(k)) errs.push(fieldError(k, 'unknown_field', {}));
  }
  for (const fd0 of fields) {
    const fd = fd0 ?? {}; // Go decodes a null field as a zero Field
    const name = wellFormed(String(fd.name ?? ''));
    const v = answers.has(name) ? answers.get(name) : null;
    if (v === null) {
      if (fd.required === true) errs.push(fieldError(name, 'required', fd));
      continue;
    }
    const code = checkAnswer(fd, v);
    if (code) errs.push(fieldError(name, code, fd));
  }
  errs.sort((a, b) => compareCodePoints(a.field, b.field));
  return errs;
}

function fieldError(field, code, fd) {
  let max = num(fd.max);
  if (code === 'too_long' && !has(max)) max = MAX_TEXT_RUNES;
  return { field, code, message: formatMessage(code, { min: num(fd.min), max }) };
}

/** formatMessage fills the Chinese template of a code ({min}, {max}). */
export function formatMessage(code, params = {}) {
  const t = hasOwn(messagesZh, code) ? messagesZh[code] : messagesZh.unknown;
  return t.replace(/\{(\w+)\}/g, (m, k) => (has(params[k]) ? String(params[k]) : m));
}

// checkAnswer mirrors Field.checkAnswer: the code, or '' when good.
function checkAnswer(fd, v) {
  switch (fd.type) {
    case 'text': {
      if (typeof v !== 'string') return 'not_string';
      const k = codePointCount(v);
      if (!has(fd.max) && k > MAX_TEXT_RUNES) return 'too_long';
      return bounds(fd, k, 'too_short', 'too_long');
    }
    case 'integer': {
      if (!(v instanceof JSONNumber) || /[.eE]/.test(v.text)) return 'not_integer';
      const b = BigInt(v.text);
      if (b > MAX_SAFE_BIG || b < -MAX_SAFE_BIG) return 'integer_out_of_range';
      return bounds(fd, Number(b), 'below_min', 'above_max');
    }
    case 'decimal': {
      if (!(v instanceof JSONNumber)) return 'not_number';
      const x = Number(v.text);
      if (!Number.isFinite(x)) return 'not_finite';
      return bounds(fd, x, 'below_min', 'above_max');
    }
    case 'date':
      if (typeof v !== 'string') return 'not_string';
      return isDate(v) ? '' : 'not_a_date';
    case 'select_one':
      if (typeof v !== 'string') return 'not_string';
      return hasChoice(fd, v) ? '' : 'unknown_choice';
    case 'select_many': {
      if (!Array.isArray(v) || !v.every((e) => e === null || typeof e === 'string')) return 'not_string_array';
      const seen = new Set();
      for (const e of v) {
        const s = e === null ? '' : e; // Go reads a null item as ""
        if (seen.has(s)) return 'duplicate_choice';
        seen.add(s);
        if (!hasChoice(fd, s)) return 'unknown_choice';
      }
      return bounds(fd, v.length, 'too_few', 'too_many');
    }
    case 'geopoint':
      return checkGeopoint(v);
    case 'photo': case 'document': case 'signature':
      if (typeof v !== 'string') return 'not_string';
      return /^[0-9a-f]{64}$/.test(v) ? '' : 'not_sha256';
    default:
      return 'unknown_type';
  }
}

function bounds(fd, x, below, above) {
  const min = num(fd.min);
  const max = num(fd.max);
  if (has(min) && x < min) return below;
  if (has(max) && x > max) return above;
  return '';
}

function hasChoice(fd, s) {
  const choices = Array.isArray(fd.choices) ? fd.choices : [];
  return choices.some((c) => typeof c?.value === 'string' && wellFormed(c.value) === s);
}

function isDate(s) {
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/.exec(s);
  if (!m) return false;
  const y = Number(m[1]);
  const mo = Number(m[2]);
  const d = Number(m[3]);
  if (mo < 1 || mo > 12 || d < 1) return false;
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1];
  return d <= days;
}

const GEO_KEYS = new Set(['lon', 'lat', 'acc', 'alt']);

function checkGeopoint(v) {
  if (!(v instanceof Map)) return 'bad_geopoint';
  const keys = [...v.keys()].sort(compareCodePoints);
  if (keys.some((k) => !GEO_KEYS.has(k))) return 'geopoint_unknown_key';
  const got = {};
  for (const [key, required] of [['lon', true], ['lat', true], ['acc', false], ['alt', false]]) {
    const r = v.has(key) ? v.get(key) : null;
    if (r === null) {
      if (required) return 'geopoint_missing';
      continue;
    }
    if (!(r instanceof JSONNumber) || !Number.isFinite(Number(r.text))) return 'geopoint_not_number';
    got[key] = Number(r.text);
  }
  if (got.lon < -180 || got.lon > 180) return 'lon_out_of_range';
  if (got.lat < -90 || got.lat > 90) return 'lat_out_of_range';
  if (has(got.acc) && got.acc < 0) return 'negative_accuracy';
  return '';
}

// ---------------------------------------------------------------------------
// Evidence slots

/**
 * missingSlots returns, in definition order, the names of the form's slots
 * holding fewer than min_count present blobs, given the number of present
 * blobs per slot name (an object or a Map). [] means the evidence is complete.
 */
export function missingSlots(form, presentCounts) {
  const count = (name) => {
    if (presentCounts instanceof Map) return presentCounts.get(name) ?? 0;
    if (presentCounts && hasOwn(presentCounts, name)) return num(presentCounts[name]) ?? 0;
    return 0;
  };
  const slots = Array.isArray(form?.slots) ? form.slots : [];
  return slots.map((s) => s ?? {}).filter((s) => count(s.name) < (num(s.min_count) ?? 0)).map((s) => s.name);
}

// Go's unicode.IsSpace, for strings.TrimSpace.
const GO_SPACE = '[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const GO_TRIM_RE = new RegExp(`^${GO_SPACE}+|${GO_SPACE}+$`, 'gu');
const goTrimSpace = (s) => s.replace(GO_TRIM_RE, '');
// Go's strings.ToLower maps code point by code point (simple case mapping).
const goToLower = (s) => {
  let out = '';
  for (const ch of s) {
    const l = ch === '\u0130' ? 'i' : ch.toLowerCase();
    out += [...l].length === 1 ? l : ch;
  }
  return out;
};

/** MAX_GPS_REASON_RUNES bounds a visit's gps_reason (syncproto.MaxGPSReasonRunes). */
export const MAX_GPS_REASON_RUNES = 200;

/**
 * checkGPSReason checks a visit's gps_reason as syncproto.CheckGPSReason
 * does: '' (none) or at most MAX_GPS_REASON_RUNES code points. It returns
 * null when valid, else 'too_long'.
 */
export function checkGPSReason(reason) {
  let n = 0;
  for (const _ of String(reason ?? '')) { // eslint-disable-line no-unused-vars
    if (++n > MAX_GPS_REASON_RUNES) return 'too_long';
  }
  return null;
}

/**
 * slotAccepts reports whether an evidence slot accepts a media type
 * (EvidenceSlot.Accepts): media_types empty accepts any; "image/*" accepts
 * every image type; parameters and case are ignored.
 */
export function slotAccepts(slot, mediaType) {
  const types = Array.isArray(slot?.media_types) ? slot.media_types : [];
  if (types.length === 0) return true;
  const mt = goToLower(goTrimSpace(String(mediaType).split(';')[0]));
  for (let want of types) {
    want = goToLower(String(want));
    if (want === mt) return true;
    if (want.endsWith('*')) {
      const prefix = want.slice(0, -1);
      if (prefix.endsWith('/') && mt.startsWith(prefix)) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Form definitions

const FIELD_TYPES = new Set(['text', 'integer', 'decimal', 'date', 'select_one', 'select_many',
  'geopoint', 'photo', 'document', 'signature']);
const REVIEW_ROLES = ['admin', 'supervisor', 'field_worker'];
const REVIEW_LEVELS = ['village', 'township', 'county'];
const validID = (s) => /^[a-z0-9_]{1,64}$/.test(s);
const validName = (s) => /^[a-z][a-z0-9_]{0,63}$/.test(s);

/**
 * checkFormError mirrors syncproto's FormDef.Check (and the JSON types that
 * ParseFormDef would refuse, as code "decode"): null when the definition is
 * usable, else {code, message} for the first problem, code a
 * syncproto.FormCode and message Simplified Chinese.
 */
export function checkFormError(form) {
  const code = formProblem(form);
  if (!code) return null;
  return { code, message: hasOwn(formMessagesZh, code) ? formMessagesZh[code] : formMessagesZh.unknown };
}

/** checkForm returns null when the form definition is usable, else a Chinese message. */
export function checkForm(form) {
  const e = checkFormError(form);
  return e && e.message;
}

function formProblem(f) {
  if (f === null || f === undefined) return 'missing';
  if (!decodes(f)) return 'decode';
  const fields = f.fields ?? [];
  const slots = f.slots ?? [];
  const review = f.review ?? [];
  if (!validID(f.id ?? '')) return 'bad_id';
  if ((f.version ?? 0) < 0) return 'bad_version';
  if (goTrimSpace(f.title ?? '') === '') return 'empty_title';
  if (fields.length === 0 && slots.length === 0) return 'no_fields_or_slots';
  if ((f.max_accuracy_m ?? 0) < 0) return 'bad_max_accuracy';
  const seen = new Set();
  for (const fd0 of fields) {
    const fd = fd0 ?? {};
    const name = fd.name ?? '';
    if (!validName(name)) return 'bad_field_name';
    if (seen.has(name)) return 'duplicate_field';
    seen.add(name);
    const p = fieldProblem(fd);
    if (p) return p;
  }
  const seenSlot = new Set();
  for (const s0 of slots) {
    const s = s0 ?? {};
    const name = s.name ?? '';
    if (!validName(name)) return 'bad_slot_name';
    if (seenSlot.has(name)) return 'duplicate_slot';
    seenSlot.add(name);
    if (goTrimSpace(s.label ?? '') === '') return 'empty_slot_label';
    const min = s.min_count ?? 0;
    const max = s.max_count ?? 0;
    if (min < 0) return 'bad_slot_count';
    if (max < 0 || (max !== 0 && max < min)) return 'bad_slot_count';
    for (const mt0 of s.media_types ?? []) {
      const mt = mt0 ?? '';
      const cut = mt.indexOf('/');
      if (cut < 0 || cut === 0 || cut === mt.length - 1 || /[ ;,]/.test(mt)) return 'bad_media_type';
    }
  }
  const seenStep = new Set();
  let last = 0;
  for (const st0 of review) {
    const st = st0 ?? {};
    const name = st.name ?? '';
    if (!validName(name)) return 'bad_step_name';
    if (seenStep.has(name)) return 'duplicate_step';
    seenStep.add(name);
    if (goTrimSpace(st.label ?? '') === '') return 'empty_step_label';
    const roles = st.roles ?? [];
    if (roles.length === 0) return 'no_roles';
    if (roles.some((r) => !REVIEW_ROLES.includes(r))) return 'unknown_role';
    const lvl = REVIEW_LEVELS.indexOf(st.level ?? '');
    if (lvl < 0) return 'unknown_level';
    if (lvl < last) return 'level_order';
    last = lvl;
  }
  return '';
}

function fieldProblem(fd) {
  if (!FIELD_TYPES.has(fd.type ?? '')) return 'unknown_field_type';
  if (goTrimSpace(fd.label ?? '') === '') return 'empty_field_label';
  const choices = fd.choices ?? [];
  if (fd.type === 'select_one' || fd.type === 'select_many') {
    if (choices.length === 0) return 'no_choices';
    const vals = new Set();
    for (const c0 of choices) {
      const c = c0 ?? {};
      const v = wellFormed(c.value ?? '');
      if (v === '') return 'bad_choice_value';
      if (vals.has(v)) return 'duplicate_choice_value';
      vals.add(v);
      if (goTrimSpace(c.label ?? '') === '') return 'empty_choice_label';
    }
  } else if (choices.length > 0) {
    return 'choices_not_allowed';
  }
  const min = num(fd.min);
  const max = num(fd.max);
  if (!has(min) && !has(max)) return '';
  if (!['integer', 'decimal', 'text', 'select_many'].includes(fd.type)) return 'bounds_not_allowed';
  const counts = fd.type === 'text' || fd.type === 'select_many';
  for (const b of [min, max]) {
    if (!has(b)) continue;
    if (!Number.isFinite(b)) return 'bound_not_finite';
    if (counts && (b < 0 || !Number.isInteger(b))) return 'bad_count_bound';
  }
  if (has(min) && has(max) && min > max) return 'min_above_max';
  return '';
}

// decodes reports whether Go's json.Unmarshal into a FormDef would accept
// the parsed value: every known key null or of the right JSON type.
function decodes(f) {
  const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x) && !(x instanceof JSONNumber);
  const opt = (x, ok) => x === undefined || x === null || ok(x);
  const str = (x) => opt(x, (y) => typeof y === 'string');
  const bool = (x) => opt(x, (y) => typeof y === 'boolean');
  const float = (x) => opt(x, (y) => Number.isFinite(num(y)));
  const int = (x) => opt(x, (y) => Number.isSafeInteger(num(y)));
  const list = (x, ok) => opt(x, (y) => Array.isArray(y) && y.every((e) => e === null || ok(e)));
  if (!isObj(f)) return false;
  const choice = (c) => isObj(c) && str(c.value) && str(c.label) && str(c.label_en);
  const field = (fd) => isObj(fd) && str(fd.name) && str(fd.type) && str(fd.label) && str(fd.label_en) &&
    bool(fd.required) && float(fd.min) && float(fd.max) && list(fd.choices, choice);
  const slot = (s) => isObj(s) && str(s.name) && str(s.label) && str(s.label_en) && int(s.min_count) &&
    int(s.max_count) && list(s.media_types, (t) => typeof t === 'string');
  const step = (st) => isObj(st) && str(st.name) && str(st.label) && str(st.level) &&
    list(st.roles, (r) => typeof r === 'string');
  return str(f.id) && int(f.version) && str(f.title) && str(f.title_en) && list(f.fields, field) &&
    list(f.slots, slot) && float(f.max_accuracy_m) && list(f.review, step);
}
