// Export of the unsent work to one file, for a device that can no longer
// sync (revoked, or a failing tablet): the outbox mutations exactly as they
// would be pushed (sequence numbers, ids, HLCs) and the photos and
// documents not yet uploaded, as base64 with their SHA-256 and the visit
// and slot that name them. An administrator imports the file with
// `fieldsync import-outbox FILE`. The format is syncproto/outboxfile
// (version 1). Nothing is deleted: exporting twice gives the same work,
// and the server's import applies it once.

import { h } from './util.js';
import { APP_VERSION, PROTOCOL_VERSION } from './sync.js';

export const FORMAT = 'fieldsync-outbox';
export const FORMAT_VERSION = 1;

/** base64 returns a Blob's bytes as base64 (without building a binary string). */
function base64(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => { const s = String(r.result); resolve(s.slice(s.indexOf(',') + 1)); };
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

/** refsOf lists the evidence a mutation names, with its visit. */
function refsOf(body) {
  if (body.visit) return (body.visit.evidence || []).map((e) => ({ ...e, visit_id: body.visit.id }));
  if (body.evidence_attach && body.evidence_attach.evidence) return [{ ...body.evidence_attach.evidence, visit_id: body.evidence_attach.visit_id }];
  return [];
}

/**
 * buildExport reads the outbox and the evidence not yet uploaded and
 * returns {blob, name, mutations, blobs, missing}: blob is the file (JSON),
 * missing counts evidence named but absent from the device.
 */
export async function buildExport(db) {
  const [m, outbox, uploads, visits] = await db.read(['meta', 'outbox', 'uploads', 'visits'], async (t) => [
    Object.fromEntries((await t.all('meta')).map((r) => [r.k, r.v])), await t.all('outbox'), await t.all('uploads'), await t.all('visits')]);
  outbox.sort((a, b) => a.seq - b.seq);
  // Which blobs: those the unsent mutations name, and those of sent visits
  // whose upload has not finished.
  const want = new Map();
  for (const row of outbox) for (const r of refsOf(row.body)) if (!want.has(r.sha256)) want.set(r.sha256, r);
  const slotOf = new Map();
  for (const v of visits) for (const e of v.evidence || []) slotOf.set(`${v.id} ${e.sha256}`, e.slot);
  for (const u of uploads) {
    if (u.state === 'done' || u.state === 'failed' || want.has(u.sha256)) continue;
    want.set(u.sha256, { sha256: u.sha256, visit_id: u.visit_id || '', slot: slotOf.get(`${u.visit_id} ${u.sha256}`) || '' });
  }
  const head = {
    format: FORMAT, version: FORMAT_VERSION, exported_at: new Date().toISOString(), server: m.server || location.origin,
    device_id: m.device_id, device_name: m.device_name || '', user: { id: (m.user || {}).id || 0, username: (m.user || {}).username || '', display_name: (m.user || {}).display_name || '' },
    revoked: !!m.revoked, app_version: APP_VERSION, protocol_version: PROTOCOL_VERSION, last_seq: m.last_seq || 0,
    mutations: outbox.map((r) => r.body),
  };
  const parts = [JSON.stringify(head).slice(0, -1), ',"blobs":['];
  let n = 0;
  let missing = 0;
  for (const ref of want.values()) {
    const p = await db.read(['photos'], (t) => t.get('photos', ref.sha256));
    if (!p || !p.blob) { missing++; continue; }
    const meta = { sha256: p.sha256, size: p.blob.size, media_type: p.media_type || ref.media_type || '', visit_id: ref.visit_id || '', slot: ref.slot || '' };
    parts.push((n ? ',' : '') + JSON.stringify(meta).slice(0, -1) + ',"data":"', await base64(p.blob), '"}');
    n++;
  }
  parts.push(']}');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').slice(0, 15);
  return {
    blob: new Blob(parts, { type: 'application/json' }),
    name: `fieldsync-outbox-${(m.device_id || 'device').slice(-8)}-${stamp}.json`,
    mutations: outbox.length, blobs: n, missing,
  };
}

/** download saves a Blob as a file through the browser. */
function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** exportButton is the "export the unsent work" button and its status line. */
export function exportButton(app, { primary = false } = {}) {
  const line = h('p', { class: 'hint', id: 'exportline', role: 'status' });
  const btn = h('button', { type: 'button', class: primary ? 'primary big' : 'big', id: 'exportbtn', onclick: async () => {
    btn.disabled = true;
    line.textContent = '正在生成导出文件…';
    try {
      const r = await buildExport(app.db);
      download(r.blob, r.name);
      await app.db.setMeta('exported_at', new Date().toISOString());
      line.textContent = `已导出 ${r.mutations} 条记录和 ${r.blobs} 个附件（${r.name}）。请把这个文件交给管理员导入。` +
        (r.missing ? `另有 ${r.missing} 个附件在本机找不到，未能导出。` : '');
    } catch (e) {
      line.textContent = '导出失败：' + ((e && e.message) || String(e));
      line.className = 'err';
    } finally {
      btn.disabled = false;
    }
  } }, '导出未发送的数据');
  return h('div', { class: 'card', id: 'exportbox' }, btn, line);
}
