// The app's screens: home, enrollment, places, the household list
// (virtualised: only the rows in view exist, so 2,000 households scroll
// smoothly), a household, the outbox and the sync log.

import { h, fmtTime, fmtAge, fmtBytes } from './util.js';
import { storageInfo } from './db.js';
import { call, describe } from './sync.js';
import { latestForms } from './forms.js';
import { householdDetails, newHouseholdButton } from './household.js';
import { rejectText } from './hhfields.js';
import { exportButton } from './export.js';

const KIND_ZH = { 'visit.create': '走访记录', 'household.create': '新建农户', 'household.update': '修改农户', 'household.move': '农户迁移', 'household.delete': '删除农户', 'evidence.attach': '补充附件' };

/** placeName returns a place's name, or its code. */
function placeName(places, code) {
  const p = places.get(code);
  return p ? p.name : code;
}

export async function homeScreen(app, root) {
  const m = await app.db.metaAll();
  const [places, hhCount, outbox, uploads, rejected, conflicts] = await app.db.read(['places', 'households', 'outbox', 'uploads', 'rejected', 'conflicts'], async (t) => [
    await t.all('places'), await t.count('households'), await t.all('outbox', null, 1).then(async (first) => ({ n: await t.count('outbox'), first: first[0] })),
    (await t.all('uploads')).filter((u) => u.state !== 'done' && u.state !== 'failed'), await t.count('rejected'),
    (await t.all('conflicts')).filter((c) => c.state === 'open').length]);
  const user = m.user || {};
  const byCode = new Map(places.map((p) => [p.code, p]));
  const mine = (user.place_codes || []).map((c) => placeName(byCode, c));
  const st = h('p', { class: 'hint', id: 'storage' }, '正在读取存储信息…');
  storageInfo(true).then((s) => {
    st.textContent = `存储：${s.persisted ? '已设为持久保存（系统不会自动清除）' : '未获持久保存许可（空间紧张时系统可能清除数据，请及时同步）'}；已用 ${fmtBytes(s.usage)}，可用上限 ${fmtBytes(s.quota)}`;
  });
  root.replaceChildren(
    h('h1', {}, `你好，${user.display_name || user.username || ''}`),
    h('dl', { class: 'kv' },
      h('dt', {}, '负责片区'), h('dd', { id: 'myplaces' }, mine.length ? mine.join('、') : '（同步后显示）'),
      h('dt', {}, '农户'), h('dd', { id: 'hhcount' }, `${hhCount} 户`),
      h('dt', {}, '待上传记录'), h('dd', { id: 'pending' }, `${outbox.n} 条` + (outbox.first ? `，最早一条已等待 ${fmtAge(outbox.first.created)}` : '')),
      h('dt', {}, '待上传附件'), h('dd', {}, `${uploads.length} 个（${fmtBytes(uploads.reduce((a, u) => a + (u.size || 0), 0))}）`),
      conflicts ? [h('dt', {}, '修改冲突'), h('dd', { class: 'warn', id: 'conflictcount' }, `${conflicts} 处待督导处理`)] : '',
      rejected ? [h('dt', {}, '被拒记录'), h('dd', { class: 'err' }, h('a', { href: '#/outbox' }, `${rejected} 条，请查看原因`))] : '',
      h('dt', {}, '上次同步'), h('dd', {}, m.last_sync ? fmtTime(m.last_sync) : '从未'),
      h('dt', {}, '设备'), h('dd', {}, m.device_name || m.device_id || '')),
    h('button', { class: 'primary big', id: 'syncbtn', onclick: () => app.syncNow() }, '立即同步'),
    h('nav', { class: 'nav' },
      h('a', { class: 'btn primary', href: '#/places', id: 'go-places' }, '我的农户'),
      h('a', { class: 'btn', href: '#/outbox' }, '待上传'),
      h('a', { class: 'btn', href: '#/log' }, '同步日志'),
      h('a', { class: 'btn', href: '#/settings' }, '设置')),
    st);
}

/**
 * notEnrolledScreen explains enrollment and takes the code: typed, scanned
 * from the console's QR (BarcodeDetector), or given in the URL the QR
 * encodes (#/enroll?code=...), which enrolls at once.
 */
export function notEnrolledScreen(app, root, fromURL) {
  const code = h('input', { id: 'code', type: 'text', autocomplete: 'off', autocapitalize: 'characters', placeholder: '例如 ABCD-EFGH-JKLM', inputmode: 'text' });
  const name = h('input', { id: 'devname', type: 'text', placeholder: '例如：李文华的平板', value: localStorage.getItem('fieldsync_devname') || '' });
  const err = h('p', { class: 'err', id: 'enrollerr', role: 'alert' });
  const btn = h('button', { class: 'primary big', id: 'enrollbtn', type: 'submit' }, '登记本设备');
  const submit = async (e) => {
    e.preventDefault();
    err.textContent = '';
    const c = code.value.trim();
    if (!c) { err.textContent = '请输入登记码'; return; }
    btn.disabled = true;
    try {
      await app.enroll(c, name.value.trim());
    } catch (ex) {
      err.textContent = ex.status === 401 ? '登记码不正确' : ex.status === 410 ? '登记码已用过或已过期，请向管理员要一个新的' : '登记失败：' + describe(ex);
    } finally {
      btn.disabled = false;
    }
  };
  const scanBox = h('div', {});
  if ('BarcodeDetector' in window && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    scanBox.append(h('button', { type: 'button', class: 'big', id: 'scanbtn', onclick: () => scanQR(scanBox, (payload) => {
      const q = parseEnrollQR(payload);
      if (q && q.origin && q.origin !== location.origin) location.assign(q.url); // another server's app
      else if (q) { code.value = q.code; submitForm.requestSubmit(); } else err.textContent = '这个二维码不是登记码';
    }) }, '扫码登记'));
  } else {
    scanBox.append(h('p', { class: 'hint', id: 'scanhint' }, '本浏览器不支持扫码：请输入后台二维码下方显示的登记码，或用手机相机扫描二维码后在浏览器中打开。'));
  }
  if (fromURL) {
    code.value = fromURL;
    history.replaceState(null, '', '#/'); // once: a reload does not redeem the code again
    setTimeout(() => submit(new Event('submit')), 0); // enroll at once with the code the QR carried
  }
  const submitForm = h('form', { onsubmit: submit },
    h('div', { class: 'field' }, h('label', { for: 'code' }, '登记码'), code),
    h('div', { class: 'field' }, h('label', { for: 'devname' }, '设备名称（可不填）'), name),
    err, btn);
  root.replaceChildren(
    h('h1', {}, '本设备尚未登记'),
    h('p', {}, '使用前，需要用一次性登记码把这台平板或手机登记到你的账号：'),
    h('ol', {},
      h('li', {}, '请管理员在管理后台“用户”页面为你生成登记码（15 分钟内有效，只能用一次）。'),
      h('li', {}, '扫描后台显示的二维码，或者在下面输入登记码。'),
      h('li', {}, '登记成功后，应用会下载你负责片区的农户和表单，之后没有网络也能工作。')),
    scanBox, submitForm);
}

/**
 * parseEnrollQR reads an enrollment QR: the app URL
 * "https://server/app/#/enroll?code=...", the older
 * "fieldsync://enroll?server=...&code=...", or a bare code. It returns
 * {code, origin, url} (origin and url for a URL) or null.
 */
export function parseEnrollQR(s) {
  try {
    const u = new URL(s);
    if (u.protocol === 'fieldsync:') {
      const c = u.searchParams.get('code');
      return c ? { code: c } : null;
    }
    if ((u.protocol === 'https:' || u.protocol === 'http:') && u.hash.startsWith('#/enroll?')) {
      const c = enrollCodeFromHash(u.hash);
      return c ? { code: c, origin: u.origin, url: u.href } : null;
    }
    return null;
  } catch (_) { /* not a URL */ }
  return /^[A-Za-z0-9-]{4,40}$/.test(s.trim()) ? { code: s.trim() } : null;
}

/** ENROLL_ASK is the localStorage key of an enrollment asked for whose answer has not arrived. */
export const ENROLL_ASK = 'fieldsync_enroll_ask';

/**
 * enrollToken returns the device token to enroll with: the one saved when
 * this code was asked for before (its answer was lost on the way back, so
 * the server answers with the same device again), else a new random one,
 * saved in storage before it is sent. Codes compare by their letters and
 * digits, in upper case.
 */
export function enrollToken(storage, code, randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n))) {
  const key = String(code).toUpperCase().replace(/[^0-9A-Z]/g, '');
  try {
    const saved = JSON.parse(storage.getItem(ENROLL_ASK) || 'null');
    if (saved && saved.code === key && /^[A-Za-z0-9_-]{32,128}$/.test(saved.token)) return saved.token;
  } catch (_) { /* not ours: replaced below */ }
  const token = btoa(String.fromCharCode(...randomBytes(32))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  storage.setItem(ENROLL_ASK, JSON.stringify({ code: key, token }));
  return token;
}

/** enrollCodeFromHash returns the code of "#/enroll?code=...", or ''. */
export function enrollCodeFromHash(hash) {
  const m = /^#\/?enroll\?(.*)$/.exec(hash || '');
  return m ? (new URLSearchParams(m[1]).get('code') || '').trim() : '';
}

async function scanQR(box, found) {
  let stream;
  const video = h('video', { playsinline: true, muted: true, style: undefined });
  video.width = 320;
  const stop = () => { if (stream) stream.getTracks().forEach((t) => t.stop()); video.remove(); cancel.remove(); };
  const cancel = h('button', { type: 'button', onclick: stop }, '取消扫描');
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
  } catch (e) {
    box.append(h('p', { class: 'err' }, '无法打开摄像头，请手动输入登记码'));
    return;
  }
  video.srcObject = stream;
  box.append(video, cancel);
  await video.play();
  const det = new window.BarcodeDetector({ formats: ['qr_code'] });
  for (let i = 0; i < 600 && stream.active; i++) {
    try {
      const codes = await det.detect(video);
      if (codes.length) { stop(); found(codes[0].rawValue); return; }
    } catch (_) { /* next frame */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  stop();
}

export function revokedScreen(app, root) {
  root.replaceChildren(
    h('h1', {}, '本设备已被停用'),
    h('p', {}, '服务器已停用本设备，无法再同步。未上传的记录仍保存在本机，没有删除。'),
    h('p', {}, '请把未发送的数据导出成文件，交给管理员导入服务器，并联系管理员。'),
    exportButton(app, { primary: true }),
    h('a', { class: 'btn', href: '#/outbox' }, '查看未上传的记录'));
}

export async function placesScreen(app, root) {
  const [places, households] = await app.db.read(['places', 'households'], async (t) => [await t.all('places'), await t.all('households')]);
  const counts = new Map();
  for (const hh of households) counts.set(hh.place_code, (counts.get(hh.place_code) || 0) + 1);
  const byCode = new Map(places.map((p) => [p.code, p]));
  // Groups with households, and every villager group (a new one may have
  // none yet: its first household is created here).
  const withHH = places.filter((p) => counts.has(p.code) || p.level === 'group').sort((a, b) => a.code.localeCompare(b.code));
  const path = (p) => { const out = []; for (let c = p.parent_code, i = 0; c && i < 10; i++) { const q = byCode.get(c); if (!q) break; out.unshift(q.name); c = q.parent_code; } return out.join(' / '); };
  root.replaceChildren(
    h('h1', {}, '我的片区'),
    withHH.length === 0 ? h('p', {}, '还没有农户数据。请联网后同步。') : '',
    h('ul', { class: 'list', id: 'placelist' }, withHH.map((p) => h('li', {},
      h('a', { href: `#/place/${encodeURIComponent(p.code)}` }, h('strong', {}, p.name), ` （${counts.get(p.code) || 0} 户）`, h('div', { class: 'hint' }, path(p)))))),
    h('p', {}, h('a', { class: 'btn', href: `#/place/*` }, `全部农户（${households.length} 户）`)));
}

/** householdLine is the sub-line of a household in the list. */
function hhInfo(hh, last, openTasks) {
  const f = hh.fields || {};
  return { name: f.head_name || '（无户主姓名）', no: f.house_no || f.address || '', last, openTasks };
}

export async function householdsScreen(app, root, placeCode) {
  const [households, visits, tasks, place] = await app.db.read(['households', 'visits', 'tasks', 'places'], async (t) => [
    placeCode === '*' ? await t.all('households') : await t.byIndex('households', 'place', placeCode),
    await t.all('visits'), await t.all('tasks'), placeCode === '*' ? null : await t.get('places', placeCode)]);
  // Times carry different offsets (the server's UTC, the device's +08:00):
  // compare instants, not strings.
  const lastBy = new Map();
  for (const v of visits) {
    const cur = lastBy.get(v.household_id);
    if (!cur || Date.parse(v.device_time) > Date.parse(cur)) lastBy.set(v.household_id, v.device_time);
  }
  const openBy = new Map();
  for (const t of tasks) if (t.state === 'open') openBy.set(t.household_id, (openBy.get(t.household_id) || 0) + 1);
  const rows = households.map((hh) => ({ hh, info: hhInfo(hh, lastBy.get(hh.id), openBy.get(hh.id) || 0) }));
  rows.sort((a, b) => a.info.no.localeCompare(b.info.no, 'zh-CN', { numeric: true }) || a.info.name.localeCompare(b.info.name, 'zh-CN'));
  for (const r of rows) {
    const f = r.hh.fields || {};
    const members = Object.keys(f).filter((k) => k.startsWith('member.')).map((k) => (f[k] && f[k].name) || '').join(' ');
    r.key = `${r.info.name} ${r.info.no} ${members}`.toLowerCase();
  }
  let shown = rows;
  const ROW = 72;
  const list = h('div', { class: 'vlist', id: 'hhlist' });
  const spacer = h('div', { class: 'spacer' });
  list.append(spacer);
  const count = h('p', { class: 'hint', id: 'hhcount' });
  const draw = () => {
    spacer.style.height = `${shown.length * ROW}px`;
    const top = list.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    const last = Math.min(shown.length, Math.ceil((top + list.clientHeight) / ROW) + 5);
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const { hh, info } = shown[i];
      const a = h('a', { class: 'hh', href: `#/hh/${encodeURIComponent(hh.id)}`, dataset: { id: hh.id } },
        h('div', { class: 'name' }, info.name, info.openTasks ? h('span', { class: 'badge bad' }, `整改 ${info.openTasks}`) : ''),
        h('div', { class: 'sub' }, info.no), h('div', { class: 'sub' }, info.last ? '上次走访 ' + fmtTime(info.last) : '尚未走访'));
      a.style.top = `${i * ROW}px`;
      frag.append(a);
    }
    spacer.replaceChildren(frag);
    count.textContent = `共 ${shown.length} 户`;
  };
  let raf = 0;
  list.addEventListener('scroll', () => { if (!raf) raf = requestAnimationFrame(() => { raf = 0; draw(); }); }, { passive: true });
  const search = h('input', { id: 'search', type: 'search', placeholder: '搜索户主、家庭成员或门牌号', oninput: () => {
    const q = search.value.trim().toLowerCase();
    shown = q ? rows.filter((r) => r.key.includes(q)) : rows;
    list.scrollTop = 0;
    draw();
  } });
  root.replaceChildren(h('h1', {}, place ? place.name : '全部农户'), place ? newHouseholdButton(place.code) : '', search, count, list);
  // Draw once the list has a size (it is rendered detached) and again
  // whenever its size changes (rotation, keyboard).
  if (typeof ResizeObserver === 'function') new ResizeObserver(() => draw()).observe(list);
  else requestAnimationFrame(draw);
}

export async function householdScreen(app, root, id) {
  const [hh, visits, tasks, conflicts, forms, place] = await app.db.read(['households', 'visits', 'tasks', 'conflicts', 'forms', 'places'], async (t) => {
    const x = await t.get('households', id);
    return [x, await t.byIndex('visits', 'household', id), await t.byIndex('tasks', 'household', id),
      await t.byIndex('conflicts', 'household', id), await t.all('forms'), x ? await t.get('places', x.place_code) : null];
  });
  if (!hh) { root.replaceChildren(h('h1', {}, '找不到这户'), h('a', { class: 'btn', href: '#/places' }, '返回')); return; }
  const f = hh.fields || {};
  visits.sort((a, b) => Date.parse(b.device_time) - Date.parse(a.device_time));
  const open = tasks.filter((t) => t.state === 'open');
  const members = Object.keys(f).filter((k) => k.startsWith('member.') && f[k]).map((k) => f[k]);
  const formBy = new Map(forms.map((x) => [`${x.id}@${x.version}`, x]));
  const title = (v) => (formBy.get(`${v.form_id}@${v.form_version}`) || {}).title || v.form_id;
  root.replaceChildren(
    h('h1', {}, f.head_name || hh.id),
    h('dl', { class: 'kv' },
      h('dt', {}, '片区'), h('dd', {}, place ? place.name : hh.place_code),
      f.address ? [h('dt', {}, '地址'), h('dd', {}, f.address)] : '',
      h('dt', {}, '家庭成员'), h('dd', {}, members.map((m) => `${m.name}${m.relation ? '（' + m.relation + '）' : ''}`).join('、') || '—'),
      h('dt', {}, '上次走访'), h('dd', { id: 'lastvisit' }, visits.length ? `${fmtTime(visits[0].device_time)}（${title(visits[0])}）` : '尚未走访')),
    open.length ? h('div', { class: 'card', id: 'tasks' }, h('h2', {}, `待整改（${open.length}）`), open.map((t) => h('div', { class: 'card' },
      h('p', {}, h('strong', {}, '退回原因：'), t.reason || '—'), h('p', { class: 'hint' }, fmtTime(t.created_at)),
      (() => {
        const v = visits.find((x) => x.id === t.visit_id);
        return v ? h('a', { class: 'btn primary', href: `#/visit/${encodeURIComponent(hh.id)}/${encodeURIComponent(v.form_id)}/${encodeURIComponent(t.id)}` }, '整改走访') : h('p', { class: 'hint' }, '原走访记录不在本机');
      })()))) : '',
    ...householdDetails(hh, conflicts),
    h('h2', {}, '新建走访'),
    h('div', { class: 'nav', id: 'formlist' }, latestForms(forms).map((x) => h('a', { class: 'btn primary', href: `#/visit/${encodeURIComponent(hh.id)}/${encodeURIComponent(x.id)}` }, x.title))),
    h('h2', {}, '走访记录'),
    h('ul', { class: 'list', id: 'visitlist' }, visits.map((v) => h('li', {}, h('div', { class: 'card' },
      h('strong', {}, title(v)), ' ', fmtTime(v.device_time),
      v.local && !v.pushed ? h('span', { class: 'badge' }, '待上传') : '',
      v.rejected ? h('div', { class: 'err' }, `被服务器拒绝：${v.rejected.message}`) : '',
      v.review_state === 'needs_rework' ? h('span', { class: 'badge bad' }, '需整改') : ''))))
  );
}

export async function outboxScreen(app, root) {
  const [rows, rejected, uploads] = await app.db.read(['outbox', 'rejected', 'uploads'], async (t) => [await t.all('outbox'), await t.all('rejected'), await t.all('uploads')]);
  const upState = { pending: '等待上传', done: '已上传', failed: '无法上传' };
  const revoked = await app.db.getMeta('revoked');
  root.replaceChildren(
    h('h1', {}, '待上传'),
    revoked ? h('p', { class: 'err', id: 'revokedline' }, '本设备已被停用，无法再同步：请用下方“导出未发送的数据”把记录交给管理员。') : '',
    h('p', {}, `记录 ${rows.length} 条`),
    h('ul', { class: 'list', id: 'outboxlist' }, rows.map((r) => h('li', {}, h('div', { class: 'card' },
      `#${r.seq} ${KIND_ZH[r.kind] || r.kind}，已等待 ${fmtAge(r.created)}（${fmtTime(r.created)}）`)))),
    rejected.length ? h('h2', {}, `被服务器拒绝（${rejected.length}）`) : '',
    h('ul', { class: 'list', id: 'rejectedlist' }, rejected.map((r) => h('li', {}, h('div', { class: 'card' },
      h('strong', {}, `#${r.seq} ${KIND_ZH[r.kind] || r.kind}`), h('div', { class: 'err' }, rejectText(r.code, r.message)),
      h('p', { class: 'hint' }, fmtTime(r.at)),
      r.kind === 'visit.create' && r.body && r.body.visit
        ? (r.redone ? h('p', { class: 'hint' }, '已修改并重新保存')
          : h('a', { class: 'btn', id: 'redo-' + r.seq, href: '#/redo/' + r.seq }, '修改后重新提交'))
        : '')))),
    h('h2', {}, '附件'),
    h('ul', { class: 'list', id: 'uploadlist' }, uploads.filter((u) => u.state !== 'done').map((u) => h('li', {}, h('div', { class: 'card' },
      `${u.sha256.slice(0, 12)}… ${fmtBytes(u.size)} ${upState[u.state] || u.state}`, u.error ? h('div', { class: 'err' }, u.error) : '')))),
    h('p', { class: 'hint' }, `已上传 ${uploads.filter((u) => u.state === 'done').length} 个`),
    h('h2', {}, '导出'),
    h('p', { class: 'hint' }, '平板无法同步（故障或已停用）时，可把未发送的记录和附件导出成一个文件，交给管理员导入服务器。导出不会删除本机数据。'),
    exportButton(app));
}

export async function logScreen(app, root) {
  const rows = await app.db.read(['log'], (t) => t.all('log'));
  rows.reverse();
  root.replaceChildren(h('h1', {}, '同步日志'),
    h('div', { class: 'log', id: 'log' }, rows.slice(0, 300).map((r) => `${fmtTime(r.at)} ${r.level === 'error' ? '【错误】' : ''}${r.text}\n`)));
}

export async function settingsScreen(app, root) {
  const m = await app.db.metaAll();
  const wifi = h('input', { type: 'checkbox', id: 'wifionly', checked: !!m.wifi_only, onchange: (e) => app.db.setMeta('wifi_only', e.target.checked) });
  root.replaceChildren(h('h1', {}, '设置'),
    h('label', { class: 'choice' }, wifi, '照片只在 Wi-Fi 下上传'),
    h('dl', { class: 'kv' },
      h('dt', {}, '服务器'), h('dd', {}, location.origin),
      h('dt', {}, '设备编号'), h('dd', {}, m.device_id || ''),
      h('dt', {}, '应用版本'), h('dd', { id: 'appversion' }, app.version || '')));
}

export { call };
