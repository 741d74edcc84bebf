// Form answers: validation with the same verdicts as
// syncproto.FormDef.ValidateAnswers, with Chinese messages.
//
// validateAnswers and slotAccepts are formcheck.js's: the one port of the
// Go rules, proven against syncproto/testdata/vectors by node's tests.

export { validateAnswers, slotAccepts } from './formcheck.js';

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

/** latestForms keeps the highest version of each form id. */
export function latestForms(forms) {
  const by = new Map();
  for (const f of forms) {
    const cur = by.get(f.id);
    if (!cur || f.version > cur.version) by.set(f.id, f);
  }
  return [...by.values()].sort((a, b) => (a.title || a.id).localeCompare(b.title || b.id, 'zh-CN'));
}
