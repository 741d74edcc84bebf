// Recording a visit: the form with every syncproto field type, evidence
// slots with their min/max counts, GPS with the accuracy shown, photos
// downscaled with their EXIF kept, a signature pad, and a draft saved as
// the worker types (a phone call or a killed app loses nothing).

import { h, newID, sha256Hex, debounce, fmtTime, inGeometry } from './util.js';
import { validateAnswers, checkSlots, slotAccepts } from './forms.js';
import { checkGPSReason, MAX_GPS_REASON_RUNES } from './formcheck.js';
import { processPhoto, SignaturePad } from './photo.js';
import { saveVisit } from './sync.js';

/** isoLocal writes a time with the device's UTC offset (2026-12-06T14:03:00.000+08:00). */
export function isoLocal(d = new Date()) {
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const pad = (n, w = 2) => String(Math.abs(n)).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}${sign}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`;
}

/** GPS_REASONS are the common reasons offered when no fix meets the form's limit. */
export const GPS_REASONS = ['山谷里没有信号', '在屋里或屋檐下，收不到卫星', '树林太密，定位不准', '阴雨天，等了很久也定位不准', '手机定位功能坏了或被关闭'];

/**
 * gpsReasonText is the gps_reason a visit carries: the chosen common
 * reason, with what was typed added; or what was typed alone ("other").
 */
export function gpsReasonText(pick, text) {
  const t = String(text || '').trim();
  if (!pick || pick === 'other') return t;
  return t ? `${pick}；${t}` : pick;
}

/** parseInput turns what was typed into the JSON value syncproto expects. */
export function parseInput(type, s) {
  if (s === '' || s === undefined || s === null) return undefined;
  if (type === 'integer') return /^-?\d+$/.test(s.trim()) ? Number(s.trim()) : s;
  if (type === 'decimal') return /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s.trim()) ? Number(s.trim()) : s;
  return s;
}

/** evidenceSlotFor picks the slot a field's blob is filed under, or null. */
function evidenceSlotFor(form, fieldName, mediaType) {
  const slots = form.slots || [];
  return slots.find((s) => s.name === fieldName) || slots.find((s) => slotAccepts(s, mediaType)) || null;
}

/**
 * renderVisit shows the form for a household and resolves nothing: it
 * calls done(visitID) after saving. app supplies db, syncer, toast.
 */
export async function renderVisit(app, root, { household, form, correctsVisitID, taskReason }) {
  const db = app.db;
  const draftID = `draft:${household.id}:${form.id}:${correctsVisitID || ''}`;
  let draft = await db.read(['drafts'], (t) => t.get('drafts', draftID));
  if (!draft || draft.form_version !== form.version) {
    draft = { id: draftID, household_id: household.id, form_id: form.id, form_version: form.version, visit_id: newID(),
      answers: {}, evidence: [], corrects_visit_id: correctsVisitID || '', started: new Date().toISOString() };
  }
  const place = await db.read(['places'], (t) => t.get('places', household.place_code));
  const errs = new Map(); // field -> element
  let saved = false; // once the visit is saved, its draft is never written again
  const saveDraft = debounce(async () => {
    // A render that a later route replaced before it was shown never
    // writes: its empty draft would outlive the visit saved meanwhile.
    if (saved || !draftState.isConnected) return;
    draft.updated = new Date().toISOString();
    try {
      await db.write(['drafts'], (t) => t.put('drafts', draft));
      draftState.textContent = '草稿已保存 ' + fmtTime(draft.updated);
    } catch (e) {
      draftState.textContent = e.message;
      app.toast(e.message, 'bad');
    }
  }, 150);
  // Leaving the app (home button, a call, the tab killed in the
  // background) writes the draft at once.
  const onHide = () => { if (document.visibilityState === 'hidden') saveDraft.flush(); };
  const onPageHide = () => saveDraft.flush();
  document.addEventListener('visibilitychange', onHide);
  window.addEventListener('pagehide', onPageHide);
  app.onLeave(() => { document.removeEventListener('visibilitychange', onHide); window.removeEventListener('pagehide', onPageHide); });
  const draftState = h('p', { class: 'hint', id: 'draftstate' }, draft.updated ? '已恢复草稿（' + fmtTime(draft.updated) + '）' : '');

  const setAnswer = (name, v) => {
    if (v === undefined) delete draft.answers[name]; else draft.answers[name] = v;
    saveDraft();
  };

  // Stores a blob (photo, scan, signature) and files it in the draft, in
  // one transaction: either both are saved or neither. Calls run one at a
  // time (photos picked in quick succession must not overwrite each
  // other's refs), and answers typed meanwhile are kept: the change is
  // applied to the live draft once the transaction committed.
  let blobChain = Promise.resolve();
  const addBlob = (blob, mediaType, slot, field) => {
    const run = async () => {
      const sha = await sha256Hex(blob);
      const ref = { sha256: sha, size: blob.size, media_type: mediaType, slot };
      const apply = (d) => {
        if (field) {
          d.evidence = d.evidence.filter((e) => e.field !== field);
          d.answers[field] = sha;
          if (slot) d.evidence.push({ ...ref, field });
          return true;
        }
        if (d.evidence.some((e) => e.sha256 === sha && e.slot === slot && !e.field)) return false;
        d.evidence.push(ref);
        return true;
      };
      const next = structuredClone(draft);
      if (!apply(next)) { app.toast('这张照片已经添加过了'); return null; }
      next.updated = new Date().toISOString();
      await db.write(['photos', 'drafts'], async (t) => {
        const had = await t.get('photos', sha); // without its bytes once the server holds them
        if (!had || !had.blob) await t.put('photos', { sha256: sha, blob, size: blob.size, media_type: mediaType, created: new Date().toISOString() });
        await t.put('drafts', next);
      });
      apply(draft);
      draft.updated = next.updated;
      await saveDraft.flush(); // a draft write already under way may predate this ref
      draftState.textContent = '草稿已保存 ' + fmtTime(draft.updated);
      return sha;
    };
    const p = blobChain.then(run, run);
    blobChain = p.catch(() => {});
    return p;
  };

  const pickFile = async (file, { slot, field, photo }) => {
    try {
      app.busy('正在处理…');
      let blob = file; let mt = file.type || 'application/octet-stream';
      if (photo || (mt.startsWith('image/') && mt !== 'image/svg+xml')) {
        const p = await processPhoto(file);
        blob = p.blob; mt = p.mediaType;
      }
      return await addBlob(blob, mt, slot, field);
    } catch (e) {
      app.toast(e.name === 'QuotaError' ? e.message : '无法添加文件：' + e.message, 'bad');
      return null;
    } finally {
      app.busy('');
    }
  };

  const thumb = async (sha) => {
    const p = await db.read(['photos'], (t) => t.get('photos', sha));
    if (!p) return h('span', { class: 'err' }, '附件丢失');
    if (!p.blob) return h('span', { class: 'card' }, '已上传到服务器');
    if (p.media_type.startsWith('image/')) return h('img', { src: URL.createObjectURL(p.blob), alt: '附件' });
    return h('span', { class: 'card' }, `文档 ${(p.size / 1024).toFixed(0)} KB`);
  };

  // --- GPS ---
  const limit = form.max_accuracy_m || 0;
  let best = null;
  const gpsLine = h('p', { class: 'gps', id: 'gpsline' }, '正在定位…');
  // No fix within the limit (or none at all): saving asks for a reason,
  // a common one picked or typed, which the visit carries as gps_reason.
  const reasonErr = h('p', { class: 'err', id: 'gps_reason_err', role: 'alert' });
  const reasonPick = h('select', { id: 'gps_reason_pick', 'aria-describedby': 'gps_reason_err',
    onchange: (e) => { draft.gps_reason_pick = e.target.value; reasonErr.textContent = ''; saveDraft(); } },
  h('option', { value: '' }, '请选择原因'),
  GPS_REASONS.map((r) => h('option', { value: r, selected: draft.gps_reason_pick === r }, r)),
  h('option', { value: 'other', selected: draft.gps_reason_pick === 'other' }, '其他（请在下面填写）'));
  const reasonText = h('input', { id: 'gps_reason', type: 'text', maxlength: MAX_GPS_REASON_RUNES, placeholder: '补充说明（选“其他”时必填）', value: draft.gps_reason || '',
    oninput: (e) => { draft.gps_reason = e.target.value; reasonErr.textContent = ''; saveDraft(); } });
  const reasonBox = h('div', { class: 'field hidden', id: 'gpsreason' },
    h('label', { for: 'gps_reason_pick' }, '定位未达到要求，请说明原因'),
    reasonPick, reasonText, reasonErr,
    h('p', { class: 'hint' }, '保存时会记录原因，这次走访会标记为待审核。也可以等待定位满足要求后再保存。'));
  const weakGPS = () => !best || (limit > 0 && best.acc > limit);
  const placeWarn = h('p', { class: 'warn hidden', id: 'gpsplace' });
  const showGPS = () => {
    const inside = best && place && place.boundary ? inGeometry(best.lon, best.lat, place.boundary) : null;
    placeWarn.textContent = inside === false ? `注意：当前位置不在本户所属片区（${place.name}）范围内，请确认是否在正确的农户家中。` : '';
    placeWarn.classList.toggle('hidden', inside !== false);
    if (!best) {
      gpsLine.textContent = '尚未定位' + (limit ? `（要求精度 ≤${limit} 米）` : '');
      gpsLine.className = 'gps warn';
    } else {
      const ok = !limit || best.acc <= limit;
      gpsLine.textContent = `定位精度 ±${Math.round(best.acc)} 米` + (limit ? `（要求 ≤${limit} 米）` : '') + ` ${best.lat.toFixed(5)}, ${best.lon.toFixed(5)}`;
      gpsLine.className = 'gps ' + (ok ? 'ok' : 'warn');
    }
    reasonBox.classList.toggle('hidden', !weakGPS());
  };
  let watch = null;
  if (navigator.geolocation) {
    watch = navigator.geolocation.watchPosition((pos) => {
      const c = pos.coords;
      const fix = { lon: c.longitude, lat: c.latitude, acc: c.accuracy };
      if (!best || fix.acc <= best.acc) best = fix;
      draft.gps = best;
      showGPS();
    }, (err) => {
      gpsLine.textContent = '定位失败：' + (err.code === 1 ? '没有定位权限' : err.code === 3 ? '超时' : '收不到信号');
      gpsLine.className = 'gps warn';
      reasonBox.classList.toggle('hidden', !weakGPS());
    }, { enableHighAccuracy: true, maximumAge: 0, timeout: 60000 });
  }
  if (draft.gps) best = draft.gps;
  app.onLeave(() => { if (watch !== null) navigator.geolocation.clearWatch(watch); saveDraft.flush(); });

  // --- fields ---
  const fieldEl = (fd) => {
    const id = 'f_' + fd.name;
    const err = h('div', { class: 'err', id: 'err_' + fd.name, role: 'alert' });
    errs.set(fd.name, err);
    const cur = draft.answers[fd.name];
    const label = h('label', { for: id }, fd.label, fd.required ? h('span', { class: 'req' }, ' *') : '');
    let input;
    const hint = [];
    switch (fd.type) {
      case 'text': {
        const long = !fd.max || fd.max > 100;
        input = h(long ? 'textarea' : 'input', { id, name: fd.name, type: long ? undefined : 'text',
          oninput: (e) => setAnswer(fd.name, parseInput('text', e.target.value)) });
        input.value = cur ?? '';
        if (fd.max) hint.push(`最多 ${fd.max} 个字`);
        break;
      }
      case 'integer': case 'decimal':
        input = h('input', { id, name: fd.name, type: 'text', inputmode: fd.type === 'integer' ? 'numeric' : 'decimal',
          oninput: (e) => setAnswer(fd.name, parseInput(fd.type, e.target.value)) });
        input.value = cur ?? '';
        if (fd.min !== undefined || fd.max !== undefined) hint.push(`范围 ${fd.min ?? '—'} 到 ${fd.max ?? '—'}`);
        break;
      case 'date':
        input = h('input', { id, name: fd.name, type: 'date', oninput: (e) => setAnswer(fd.name, parseInput('date', e.target.value)) });
        input.value = cur ?? '';
        break;
      case 'select_one':
        if ((fd.choices || []).length > 8) {
          input = h('select', { id, name: fd.name, onchange: (e) => setAnswer(fd.name, e.target.value || undefined) },
            h('option', { value: '' }, '请选择'), fd.choices.map((c) => h('option', { value: c.value, selected: cur === c.value }, c.label)));
        } else {
          input = h('div', { id, role: 'radiogroup' }, fd.choices.map((c) => h('label', { class: 'choice' },
            h('input', { type: 'radio', name: fd.name, value: c.value, checked: cur === c.value, onchange: () => setAnswer(fd.name, c.value) }), c.label)));
        }
        break;
      case 'select_many': {
        const chosen = new Set(Array.isArray(cur) ? cur : []);
        input = h('div', { id }, fd.choices.map((c) => h('label', { class: 'choice' },
          h('input', { type: 'checkbox', name: fd.name, value: c.value, checked: chosen.has(c.value), onchange: (e) => {
            if (e.target.checked) chosen.add(c.value); else chosen.delete(c.value);
            setAnswer(fd.name, fd.choices.map((x) => x.value).filter((v) => chosen.has(v)));
          } }), c.label)));
        if (fd.min !== undefined || fd.max !== undefined) hint.push(`选择 ${fd.min ?? 0} 到 ${fd.max ?? fd.choices.length} 项`);
        break;
      }
      case 'geopoint': {
        const show = h('span', { class: 'hint' }, cur ? `${cur.lat.toFixed(5)}, ${cur.lon.toFixed(5)} ±${Math.round(cur.acc ?? 0)} 米` : '未记录');
        input = h('div', { id, class: 'row' },
          h('button', { type: 'button', onclick: () => {
            if (!best) { app.toast('还没有定位，请稍等'); return; }
            const v = { lon: best.lon, lat: best.lat, acc: Math.round(best.acc * 10) / 10 };
            setAnswer(fd.name, v);
            show.textContent = `${v.lat.toFixed(5)}, ${v.lon.toFixed(5)} ±${Math.round(v.acc)} 米`;
          } }, '记录当前位置'),
          h('button', { type: 'button', onclick: () => { setAnswer(fd.name, undefined); show.textContent = '未记录'; } }, '清除'), show);
        break;
      }
      case 'photo': case 'document': {
        const box = h('div', { class: 'thumbs' });
        const refresh = async () => { box.replaceChildren(); if (draft.answers[fd.name]) box.append(h('figure', {}, await thumb(draft.answers[fd.name]))); };
        refresh();
        const accept = fd.type === 'photo' ? 'image/*' : 'image/*,application/pdf';
        const onpick = async (e) => {
          const f = e.target.files[0]; e.target.value = '';
          if (!f) return;
          const slot = evidenceSlotFor(form, fd.name, fd.type === 'photo' ? 'image/jpeg' : f.type);
          if (!slot) app.toast('提示：此表单没有可存放该附件的证据栏，附件只保存在本机，不会上传。请联系管理员修改表单。', 'bad');
          if (await pickFile(f, { field: fd.name, slot: slot ? slot.name : '', photo: fd.type === 'photo' })) refresh();
        };
        input = h('div', { id },
          h('div', { class: 'row' },
            fd.type === 'photo' ? h('label', { class: 'btn primary' }, '拍照', h('input', { type: 'file', class: 'hidden', accept, capture: 'environment', 'data-field': fd.name, onchange: onpick })) : '',
            h('label', { class: 'btn' }, fd.type === 'photo' ? '从相册选择' : '选择文件', h('input', { type: 'file', class: 'hidden', accept, 'data-field-gallery': fd.name, onchange: onpick }))),
          box);
        break;
      }
      case 'signature': {
        const canvas = h('canvas', { class: 'sigpad', id: id + '_pad' });
        const box = h('div', { class: 'thumbs' });
        const refresh = async () => { box.replaceChildren(); if (draft.answers[fd.name]) box.append(h('figure', {}, await thumb(draft.answers[fd.name]))); };
        refresh();
        let pad;
        input = h('div', { id }, canvas, h('div', { class: 'row' },
          h('button', { type: 'button', class: 'primary', onclick: async () => {
            if (pad.empty) { app.toast('请先签名'); return; }
            const blob = await pad.toBlob();
            const slot = evidenceSlotFor(form, fd.name, 'image/png');
            if (await addBlob(blob, 'image/png', slot ? slot.name : '', fd.name)) { pad.clear(); refresh(); }
          } }, '确认签名'),
          h('button', { type: 'button', onclick: () => pad.clear() }, '重写')), box);
        requestAnimationFrame(() => { pad = new SignaturePad(canvas); });
        break;
      }
      default:
        input = h('p', { class: 'err' }, `本应用不认识的题型：${fd.type}`);
    }
    return h('div', { class: 'field', dataset: { field: fd.name } }, label, input, hint.length ? h('p', { class: 'hint' }, hint.join('；')) : '', err);
  };

  const slotEl = (s) => {
    const err = h('div', { class: 'err', id: 'err_slot_' + s.name, role: 'alert' });
    errs.set('slot:' + s.name, err);
    const box = h('div', { class: 'thumbs', id: 'slot_' + s.name });
    const count = h('span', { class: 'hint' });
    const refresh = async () => {
      const mine = draft.evidence.filter((e) => e.slot === s.name && !e.field);
      count.textContent = `已有 ${mine.length} 个` + (s.min_count ? `，至少 ${s.min_count} 个` : '') + (s.max_count ? `，最多 ${s.max_count} 个` : '');
      box.replaceChildren();
      for (const e of mine) {
        box.append(h('figure', {}, await thumb(e.sha256), h('button', { type: 'button', class: 'danger', 'aria-label': '删除', onclick: async () => {
          draft.evidence = draft.evidence.filter((x) => !(x.sha256 === e.sha256 && x.slot === s.name && !x.field));
          saveDraft(); refresh();
        } }, '×')));
      }
    };
    refresh();
    const images = (s.media_types || []).length === 0 || (s.media_types || []).some((m) => m.startsWith('image/'));
    const accept = (s.media_types || []).join(',') || '*/*';
    const onpick = async (e) => {
      const files = [...e.target.files]; e.target.value = '';
      for (const f of files) {
        if (f.type && !slotAccepts(s, f.type) && !(f.type.startsWith('image/') && slotAccepts(s, 'image/jpeg'))) { app.toast(`此栏不接受 ${f.type} 文件`, 'bad'); continue; }
        await pickFile(f, { slot: s.name, photo: f.type.startsWith('image/') });
      }
      refresh();
    };
    return h('div', { class: 'field', dataset: { slot: s.name } },
      h('label', {}, s.label, s.min_count ? h('span', { class: 'req' }, ' *') : ''), count,
      h('div', { class: 'row' },
        images ? h('label', { class: 'btn primary' }, '拍照', h('input', { type: 'file', class: 'hidden', accept: 'image/*', capture: 'environment', 'data-slot': s.name, onchange: onpick })) : '',
        h('label', { class: 'btn' }, '从相册或文件选择', h('input', { type: 'file', class: 'hidden', accept, multiple: true, 'data-slot-gallery': s.name, onchange: onpick }))),
      box, err);
  };

  const showErrors = (list) => {
    for (const el of errs.values()) el.textContent = '';
    for (const e of list) {
      const el = errs.get(e.field);
      if (el) el.textContent = e.message;
    }
    if (list.length) {
      const first = errs.get(list[0].field);
      if (first) first.parentElement.scrollIntoView({ block: 'center' });
    }
  };

  const save = async () => {
    saveBtn.disabled = true;
    try {
      const answers = { ...draft.answers };
      const evidence = draft.evidence.filter((e) => e.slot);
      const list = [...validateAnswers(form, answers), ...checkSlots(form, evidence.filter((e) => !e.field))];
      showErrors(list);
      if (list.length) { app.toast(`有 ${list.length} 处需要修改`, 'bad'); return; }
      const weak = weakGPS();
      const reason = weak ? gpsReasonText(reasonPick.value, reasonText.value) : '';
      if (weak && (!reason || checkGPSReason(reason))) {
        reasonBox.classList.remove('hidden');
        reasonErr.textContent = reason ? `原因太长：最多 ${MAX_GPS_REASON_RUNES} 个字` : (reasonPick.value === 'other' ? '请填写原因' : '请选择或填写原因');
        (reasonPick.value === 'other' ? reasonText : reasonPick).focus();
        reasonBox.scrollIntoView({ block: 'center' });
        app.toast(best ? `定位精度 ±${Math.round(best.acc)} 米，未达到要求（≤${limit} 米）：请等待定位，或说明原因后再保存` : '还没有定位：请等待定位，或说明原因后再保存', 'bad');
        return;
      }
      const visit = {
        id: draft.visit_id, household_id: household.id, form_id: form.id, form_version: form.version,
        answers, device_time: isoLocal(),
        evidence: evidence.map(({ sha256, size, media_type, slot }) => ({ sha256, size, media_type, slot })),
      };
      if (best) { visit.point = { lon: best.lon, lat: best.lat }; visit.accuracy_m = Math.round(best.acc * 10) / 10; }
      if (draft.corrects_visit_id) visit.corrects_visit_id = draft.corrects_visit_id;
      if (reason) visit.gps_reason = reason;
      saveDraft.cancel();
      saved = true;
      try {
        await saveVisit(db, visit, draftID, {}, draft.redo_seq);
      } catch (e) {
        saved = false; // nothing was written: the draft stays and can be saved again
        throw e;
      }
      app.toast('已保存，等待同步');
      app.afterSave();
      location.hash = `#/hh/${encodeURIComponent(household.id)}`;
    } catch (e) {
      app.toast(e.name === 'QuotaError' ? e.message : '保存失败：' + e.message, 'bad');
    } finally {
      saveBtn.disabled = false;
    }
  };
  const saveBtn = h('button', { type: 'button', class: 'primary big', id: 'save' }, '保存走访');
  saveBtn.addEventListener('click', save);

  showGPS();
  root.replaceChildren(
    h('h1', {}, form.title),
    h('p', {}, '户主：', h('strong', {}, household.fields?.head_name ?? household.id)),
    taskReason ? h('p', { class: 'banner bad' }, '整改要求：', taskReason) : '',
    gpsLine, placeWarn, reasonBox, draftState,
    h('form', { id: 'visitform', onsubmit: (e) => { e.preventDefault(); save(); } },
      (form.fields || []).map(fieldEl),
      (form.slots || []).length ? h('h2', {}, '照片和附件') : '',
      (form.slots || []).map(slotEl)),
    saveBtn,
    h('a', { class: 'btn', href: `#/hh/${encodeURIComponent(household.id)}` }, '返回（草稿会保留）'));
  if (!draft.updated) saveDraft();
}
