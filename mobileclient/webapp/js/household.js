// Household screens: create a household in a villager group, edit a
// household's fields and members (offline: each save is one outbox
// mutation, household.create or household.update, and the local copy
// changes at once), and the household's details with the conflicts the
// server reported.

import { h, newID, nextHLC } from './util.js';
import { enqueue } from './db.js';
import { formatMessage } from './formcheck.js';
import {
  HH_FIELDS, MEMBER_PREFIX, applyFields, canon, checkFields, conflictText, fieldLabel, fmtValue,
  isSensitive, memberValue, parseField, rejectText,
} from './hhfields.js';

const byOrder = (a, b) => (a.birth_year || 0) - (b.birth_year || 0);

/** editHouseholdScreen: route #/hhedit/<id>. */
export async function editHouseholdScreen(app, root, id) {
  const [hh, place] = await app.db.read(['households', 'places'], async (t) => {
    const x = await t.get('households', id);
    return [x, x ? await t.get('places', x.place_code) : null];
  });
  if (!hh) { root.replaceChildren(h('h1', {}, '找不到这户'), h('a', { class: 'btn', href: '#/places' }, '返回')); return; }
  renderEditor(app, root, { hh, place });
}

/** newHouseholdScreen: route #/hhnew/<place code>. */
export async function newHouseholdScreen(app, root, placeCode) {
  const place = await app.db.read(['places'], (t) => t.get('places', placeCode));
  if (!place) { root.replaceChildren(h('h1', {}, '找不到这个片区'), h('a', { class: 'btn', href: '#/places' }, '返回')); return; }
  renderEditor(app, root, { hh: null, place });
}

function renderEditor(app, root, { hh, place }) {
  const creating = !hh;
  const before = creating ? {} : { ...(hh.fields || {}) };
  const errs = new Map();
  const errBox = (name) => {
    const e = h('div', { class: 'err', id: 'herr_' + name, role: 'alert' });
    errs.set(name, e);
    return e;
  };
  const inputs = new Map();
  const fieldNodes = HH_FIELDS.map((fd) => {
    const cur = before[fd.name];
    const id = 'hf_' + fd.name;
    let input;
    if (fd.kind === 'select') {
      const opts = [['', '（未填）'], ...fd.options];
      if (cur !== undefined && cur !== null && !fd.options.some(([k]) => k === cur)) opts.push([String(cur), String(cur)]);
      input = h('select', { id }, opts.map(([k, label]) => h('option', { value: k, selected: k === (cur ?? '') }, label)));
    } else if (fd.kind === 'textarea') {
      input = h('textarea', { id });
      input.value = typeof cur === 'string' ? cur : cur == null ? '' : JSON.stringify(cur);
    } else {
      input = h('input', { id, type: 'text', inputmode: fd.kind === 'number' ? 'decimal' : fd.name === 'phone' || fd.name === 'id_card_no' ? 'tel' : 'text', autocomplete: 'off' });
      input.value = cur == null ? '' : typeof cur === 'string' ? cur : String(cur);
    }
    inputs.set(fd.name, { fd, input });
    return h('div', { class: 'field', dataset: { field: fd.name } },
      h('label', { for: id }, fd.label, creating && fd.name === 'head_name' ? h('span', { class: 'req' }, ' *') : ''),
      input, fd.sensitive && !creating ? h('p', { class: 'hint' }, '重要信息：与他人的修改冲突时由督导裁定') : '', errBox(fd.name));
  });

  // Location: taken from the device's GPS (a sensitive field).
  let newLocation;
  const locLine = h('p', { id: 'hloc_value' }, before.location ? fmtValue('location', before.location) : '尚未记录位置');
  const locBtn = h('button', { type: 'button', id: 'hloc', onclick: () => {
    if (!navigator.geolocation) { errs.get('location').textContent = '本设备不能定位'; return; }
    locBtn.disabled = true;
    errs.get('location').textContent = '';
    locLine.textContent = '正在定位…';
    navigator.geolocation.getCurrentPosition((pos) => {
      locBtn.disabled = false;
      const r7 = (x) => Math.round(x * 1e7) / 1e7;
      newLocation = { lon: r7(pos.coords.longitude), lat: r7(pos.coords.latitude) };
      locLine.textContent = `${fmtValue('location', newLocation)}（精度 ±${Math.round(pos.coords.accuracy)} 米，保存后生效）`;
    }, (err) => {
      locBtn.disabled = false;
      locLine.textContent = before.location ? fmtValue('location', before.location) : '尚未记录位置';
      errs.get('location').textContent = err.code === 1 ? '没有定位权限，请在浏览器设置中允许' : '定位失败，请到开阔处再试';
    }, { enableHighAccuracy: true, timeout: 30000, maximumAge: 10000 });
  } }, '记录当前位置');
  const locNode = h('div', { class: 'field', dataset: { field: 'location' } }, h('label', {}, '位置'), locLine, locBtn, errBox('location'));

  // Members: one card each; a removed member is sent as null.
  const members = new Map(); // field name -> {name, relation, year, removed, box}
  const memberBox = h('div', { id: 'members' });
  const addMember = (key, m) => {
    const name = h('input', { type: 'text', id: `hm_name_${key}`, value: m.name || '', placeholder: '姓名' });
    const rel = h('input', { type: 'text', id: `hm_rel_${key}`, value: m.relation || '', placeholder: '与户主关系，如 配偶' });
    const year = h('input', { type: 'text', id: `hm_year_${key}`, inputmode: 'numeric', value: m.birth_year ? String(m.birth_year) : '', placeholder: '出生年份，如 1980' });
    const row = { name, rel, year, removed: false, box: null };
    const rm = h('button', { type: 'button', class: 'danger', onclick: () => {
      row.removed = !row.removed;
      row.box.classList.toggle('removed', row.removed);
      rm.textContent = row.removed ? '撤销删除' : '删除此成员';
      for (const x of [name, rel, year]) x.disabled = row.removed;
    } }, '删除此成员');
    row.box = h('div', { class: 'card', dataset: { member: key } }, h('div', { class: 'row' }, name, rel, year), rm, errBox(key));
    members.set(key, row);
    memberBox.append(row.box);
  };
  for (const [k, v] of Object.entries(before).filter(([k2, v2]) => k2.startsWith(MEMBER_PREFIX) && v2).sort((a, b) => byOrder(a[1], b[1]))) addMember(k, v);

  const formErr = h('p', { class: 'err', id: 'hherr', role: 'alert' });
  const save = h('button', { class: 'primary big', id: 'hhsave', type: 'submit' }, creating ? '保存新农户' : '保存修改');
  const submit = async (e) => {
    e.preventDefault();
    formErr.textContent = '';
    for (const el of errs.values()) el.textContent = '';
    const edited = {};
    let bad = false;
    for (const [name, { fd, input }] of inputs) {
      const r = parseField(fd.kind, input.value);
      if (r.error) { errs.get(name).textContent = formatMessage(r.error); bad = true; continue; }
      edited[name] = r.value;
    }
    for (const [key, row] of members) {
      if (row.removed) { edited[key] = undefined; continue; }
      const r = memberValue(row.name.value, row.rel.value, row.year.value);
      if (r.error) { errs.get(key).textContent = r.message || formatMessage(r.error); bad = true; continue; }
      // Keep what this screen does not edit (an ID card number).
      edited[key] = { ...(before[key] || {}), ...r.value };
      if (!r.value.relation) delete edited[key].relation;
      if (!r.value.birth_year) delete edited[key].birth_year;
    }
    if (newLocation) edited.location = newLocation;
    if (creating && !edited.head_name) { errs.get('head_name').textContent = formatMessage('required'); bad = true; }
    const changes = {};
    for (const [k, v] of Object.entries(edited)) {
      const was = before[k];
      if ((v === undefined || v === null) && (was === undefined || was === null)) continue;
      if (canon(v) !== canon(was)) changes[k] = v === undefined ? null : v;
    }
    for (const fe of checkFields(changes)) {
      const el = errs.get(fe.field);
      if (el) el.textContent = fe.message; else formErr.textContent = `${fieldLabel(fe.field)}：${fe.message}`;
      bad = true;
    }
    if (bad) { formErr.textContent ||= '请先改正标红的内容'; return; }
    // A creation the server refused is corrected here and sent again as a
    // creation (the server holds nothing under its id).
    const resend = !creating && !!hh.rejected;
    if (!creating && !resend && Object.keys(changes).length === 0) { formErr.textContent = '没有修改'; return; }
    save.disabled = true;
    try {
      const id = creating ? newID() : hh.id;
      await app.db.write(['households', 'outbox', 'meta'], async (t) => {
        if (creating) {
          const fields = applyFields({}, changes);
          await enqueue(t, 'household.create', 'household', { id, place_code: place.code, fields }, nextHLC);
          await t.put('households', { id, place_code: place.code, fields, version: 0, local: true });
          return;
        }
        const cur = await t.get('households', id);
        if (!cur) throw new Error('这一户已不在本机（负责片区可能已调整）');
        if (resend) {
          const fields = applyFields(cur.fields, changes);
          await enqueue(t, 'household.create', 'household', { id, place_code: cur.place_code, fields }, nextHLC);
          const next = { ...cur, fields, local: true };
          delete next.rejected;
          await t.put('households', next);
          return;
        }
        await enqueue(t, 'household.update', 'household_update', { household_id: id, base_version: cur.version || 0, fields: changes }, nextHLC);
        const next = { ...cur, server_fields: cur.server_fields || cur.fields, fields: applyFields(cur.fields, changes) };
        delete next.rejected_edit;
        await t.put('households', next);
      });
      app.toast(creating ? '新农户已保存在本机，联网后自动上传' : '修改已保存在本机，联网后自动上传');
      app.afterSave();
      location.hash = '#/hh/' + encodeURIComponent(id);
    } catch (ex) {
      formErr.textContent = '保存失败：' + (ex.message || ex);
      app.toast(formErr.textContent, 'bad');
    } finally {
      save.disabled = false;
    }
  };
  root.replaceChildren(
    h('h1', {}, creating ? `新增农户（${place.name}）` : `修改：${before.head_name || hh.id}`),
    hh && hh.rejected ? h('p', { class: 'err' }, '这户的新建被服务器拒绝：' + rejectText(hh.rejected.code, hh.rejected.message) + '。改正后保存，将重新提交。') : '',
    creating ? h('p', { class: 'hint' }, '新农户先保存在本机，联网同步后上传到服务器。') : h('p', { class: 'hint' }, `片区：${place ? place.name : hh.place_code}。修改先保存在本机，同步时服务器按字段合并。`),
    h('form', { id: 'hhform', onsubmit: submit, novalidate: true },
      fieldNodes, locNode,
      h('h2', {}, '家庭成员'), memberBox,
      h('button', { type: 'button', id: 'addmember', onclick: () => addMember(MEMBER_PREFIX + newID(), {}) }, '添加家庭成员'),
      formErr, save),
    h('a', { class: 'btn', href: creating ? `#/place/${encodeURIComponent(place.code)}` : `#/hh/${encodeURIComponent(hh.id)}` }, '取消'));
}

/**
 * householdDetails is what the household screen shows of the household
 * itself: its fields, the edit button, the state of unsent or refused
 * changes, and the conflicts the server reported.
 */
export function householdDetails(hh, conflicts) {
  const f = hh.fields || {};
  const rows = HH_FIELDS.filter((fd) => f[fd.name] !== undefined && f[fd.name] !== null && fd.name !== 'head_name' && fd.name !== 'address')
    .map((fd) => [h('dt', {}, fd.label), h('dd', { dataset: { field: fd.name } }, fmtValue(fd.name, f[fd.name]))]);
  const order = { open: 0, auto_resolved: 1, resolved: 2 };
  const cs = [...conflicts].sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3) || String(b.created_at).localeCompare(String(a.created_at))).slice(0, 50);
  const open = conflicts.filter((c) => c.state === 'open').length;
  return [
    rows.length ? h('dl', { class: 'kv', id: 'hhfields' }, rows) : '',
    hh.rejected ? h('p', { class: 'err', id: 'hhrejected' }, '新建被服务器拒绝：' + rejectText(hh.rejected.code, hh.rejected.message) + '。请点“修改农户信息”改正后重新提交。') : '',
    hh.rejected_edit ? h('p', { class: 'err', id: 'hhrejected' }, '修改被服务器拒绝：' + rejectText(hh.rejected_edit.code, hh.rejected_edit.message)) : '',
    hh.local && !hh.rejected ? h('p', { class: 'warn', id: 'hhpending' }, '新建的农户，尚未上传') : hh.server_fields ? h('p', { class: 'warn', id: 'hhpending' }, '有修改尚未上传') : '',
    h('p', {}, h('a', { class: 'btn', id: 'hhedit', href: `#/hhedit/${encodeURIComponent(hh.id)}` }, '修改农户信息')),
    cs.length ? h('div', { class: 'card', id: 'conflicts' },
      h('h2', {}, open ? `修改冲突（${open} 处待督导处理）` : '修改冲突记录'),
      cs.map((c) => {
        const x = conflictText(c, f);
        return h('div', { class: 'card', dataset: { conflict: c.id, state: c.state || '' } },
          h('p', {}, h('strong', {}, x.field), isSensitive(c.field) ? h('span', { class: 'badge' }, '重要信息') : '', h('span', { class: x.open ? 'badge bad' : 'badge' }, x.state)),
          h('dl', { class: 'kv' },
            h('dt', {}, '现在的值'), h('dd', {}, x.kept),
            h('dt', {}, '未采用的值'), h('dd', {}, x.losing),
            h('dt', {}, '未采用的修改'), h('dd', {}, `${x.by}，修改于 ${x.when}`),
            h('dt', {}, '服务器记录于'), h('dd', {}, x.recorded)));
      })) : '',
  ];
}

/** newHouseholdButton is the place screen's button for a new household. */
export function newHouseholdButton(placeCode) {
  return h('a', { class: 'btn primary', id: 'hhnew', href: `#/hhnew/${encodeURIComponent(placeCode)}` }, '新增农户');
}
