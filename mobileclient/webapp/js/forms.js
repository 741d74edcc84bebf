// Form answers: validation with the same verdicts as
// syncproto.FormDef.ValidateAnswers, with Chinese messages.
//
// TEMPORARY: validateAnswers below is this branch's own port of the Go
// rules. At merge it is replaced by `export { validateAnswers } from
// './formcheck.js'` (the shared module proven against syncproto/testdata's
// vectors); keep the signature: validateAnswers(form, answers) ->
// [{field, code, message}], sorted by field.

const MAX_TEXT_RUNES = 10000;
const MAX_SAFE = Number.MAX_SAFE_INTEGER; // 2^53-1, as syncproto.MaxSafeInteger

const msg = {
  unknown_field: () => '表单中没有此项',
  required: () => '此项必填',
  not_string: () => '应为文字',
  too_long_text: () => `不能超过 ${MAX_TEXT_RUNES} 个字`,
  length_below_min: (b) => `至少 ${b} 个字`,
  length_above_max: (b) => `最多 ${b} 个字`,
  not_integer: () => '请填写整数',
  integer_out_of_range: () => '整数超出范围',
  not_number: () => '请填写数字',
  value_below_min: (b) => `不能小于 ${b}`,
  value_above_max: (b) => `不能大于 ${b}`,
  not_date: () => '请填写正确的日期（年-月-日）',
  not_choice: () => '不是可选项',
  not_array: () => '选择格式不对',
  chosen_twice: () => '同一项选了两次',
  count_below_min: (b) => `至少选择 ${b} 项`,
  count_above_max: (b) => `最多选择 ${b} 项`,
  bad_geopoint: () => '位置格式不对',
  geopoint_range: () => '经纬度超出范围',
  not_sha256: () => '附件无效，请重新拍摄或选择',
};

function err(field, code, bound) {
  return { field, code, message: msg[code](bound) };
}

const isDateString = (s) => {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(s)) return false;
  const [y, m, d] = s.split('-').map(Number);
  if (m < 1 || m > 12 || d < 1) return false;
  const days = [31, (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return d <= days[m - 1];
};

function bounds(fd, v, what) {
  if (fd.min !== undefined && fd.min !== null && v < fd.min) return [`${what}_below_min`, fd.min];
  if (fd.max !== undefined && fd.max !== null && v > fd.max) return [`${what}_above_max`, fd.max];
  return null;
}

function checkAnswer(fd, v) {
  switch (fd.type) {
    case 'text': {
      if (typeof v !== 'string') return ['not_string'];
      const n = [...v].length; // code points, as Go's utf8.RuneCountInString
      if ((fd.max === undefined || fd.max === null) && n > MAX_TEXT_RUNES) return ['too_long_text'];
      return bounds(fd, n, 'length');
    }
    case 'integer':
      if (typeof v !== 'number' || !Number.isInteger(v)) return ['not_integer'];
      if (Math.abs(v) > MAX_SAFE) return ['integer_out_of_range'];
      return bounds(fd, v, 'value');
    case 'decimal':
      if (typeof v !== 'number' || !Number.isFinite(v)) return ['not_number'];
      return bounds(fd, v, 'value');
    case 'date':
      if (typeof v !== 'string') return ['not_string'];
      return isDateString(v) ? null : ['not_date'];
    case 'select_one':
      if (typeof v !== 'string') return ['not_string'];
      return (fd.choices || []).some((c) => c.value === v) ? null : ['not_choice'];
    case 'select_many': {
      if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) return ['not_array'];
      const seen = new Set();
      for (const s of v) {
        if (seen.has(s)) return ['chosen_twice'];
        seen.add(s);
        if (!(fd.choices || []).some((c) => c.value === s)) return ['not_choice'];
      }
      return bounds(fd, v.length, 'count');
    }
    case 'geopoint': {
      if (typeof v !== 'object' || Array.isArray(v)) return ['bad_geopoint'];
      for (const k of Object.keys(v)) if (!['lon', 'lat', 'acc', 'alt'].includes(k)) return ['bad_geopoint'];
      for (const k of ['lon', 'lat']) if (typeof v[k] !== 'number' || !Number.isFinite(v[k])) return ['bad_geopoint'];
      for (const k of ['acc', 'alt']) if (v[k] !== undefined && v[k] !== null && (typeof v[k] !== 'number' || !Number.isFinite(v[k]))) return ['bad_geopoint'];
      if (v.lon < -180 || v.lon > 180 || v.lat < -90 || v.lat > 90) return ['geopoint_range'];
      if (typeof v.acc === 'number' && v.acc < 0) return ['bad_geopoint'];
      return null;
    }
    case 'photo': case 'document': case 'signature':
      if (typeof v !== 'string') return ['not_string'];
      return /^[0-9a-f]{64}$/.test(v) ? null : ['not_sha256'];
    default:
      return ['unknown_field'];
  }
}

/** validateAnswers checks answers (field name -> JS value) against a form. */
export function validateAnswers(form, answers) {
  const out = [];
  const fields = form.fields || [];
  const names = new Set(fields.map((f) => f.name));
  for (const k of Object.keys(answers || {})) if (!names.has(k)) out.push(err(k, 'unknown_field'));
  for (const fd of fields) {
    const v = answers ? answers[fd.name] : undefined;
    if (v === undefined || v === null) {
      if (fd.required) out.push(err(fd.name, 'required'));
      continue;
    }
    const r = checkAnswer(fd, v);
    if (r) out.push(err(fd.name, r[0], r[1]));
  }
  out.sort((a, b) => (a.field < b.field ? -1 : a.field > b.field ? 1 : 0));
  return out;
}

/**
 * checkSlots checks evidence counts: each slot needs min_count items and
 * at most max_count (0 = no limit). Returns errors keyed by "slot:<name>".
 */
export function checkSlots(form, evidence) {
  const out = [];
  for (const s of form.slots || []) {
    const n = evidence.filter((e) => e.slot === s.name).length;
    if (n < (s.min_count || 0)) out.push({ field: 'slot:' + s.name, code: 'slot_min', message: `至少需要 ${s.min_count} 个附件` });
    if (s.max_count && n > s.max_count) out.push({ field: 'slot:' + s.name, code: 'slot_max', message: `最多 ${s.max_count} 个附件` });
  }
  return out;
}

/** slotAccepts reports whether a slot takes a media type (as EvidenceSlot.Accepts). */
export function slotAccepts(slot, mediaType) {
  const types = slot.media_types || [];
  if (types.length === 0) return true;
  const mt = mediaType.split(';')[0].trim().toLowerCase();
  return types.some((w) => {
    w = w.toLowerCase();
    return w === mt || (w.endsWith('/*') && mt.startsWith(w.slice(0, -1)));
  });
}

/** latestForms keeps the highest version of each form id. */
export function latestForms(forms) {
  const by = new Map();
  for (const f of forms) {
    const cur = by.get(f.id);
    if (!cur || f.version > cur.version) by.set(f.id, f);
  }
  return [...by.values()].sort((a, b) => (a.title || a.id).localeCompare(b.title || b.id, 'zh-CN'));
}
