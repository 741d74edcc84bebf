// Household field logic of the field app (js/hhfields.js): the server's
// field checks, change sets, the local view with unsent edits on top, the
// undoing of a refused edit and the Chinese text of conflicts.
// Run: node --test mobileclient/webapp/test/
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  applyFields, canon, checkFields, conflictText, diffFields, fieldLabel, fmtValue, memberValue, overlayPending,
  parseField, rejectText, settleRejected, validFieldName, validID, viewOf,
} from '../js/hhfields.js';

const UUID = '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
const ULID = '01J0ABCDEFGHJKMNPQRSTVWXYZ';
const codes = (errs) => errs.map((e) => [e.field, e.code]);

// The shared vectors: syncproto's TestHouseholdVectors_Go runs the same file.
const vectorFile = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'syncproto', 'testdata', 'household_vectors.json');
describe('household_vectors.json (same verdicts as syncproto.CheckHouseholdFields)', () => {
  const doc = JSON.parse(readFileSync(vectorFile, 'utf8'));
  it('has vectors', () => assert.ok(doc.vectors.length >= 30));
  for (const v of doc.vectors) {
    it(v.name, () => {
      assert.deepEqual(checkFields(v.fields).map(({ field, code }) => ({ field, code })), v.errors);
    });
  }
});

describe('validID and validFieldName (syncproto.ValidID, ValidFieldName)', () => {
  it('accepts ULIDs and UUIDs only', () => {
    assert.ok(validID(UUID));
    assert.ok(validID(ULID));
    assert.ok(validID(ULID.toLowerCase()));
    assert.ok(!validID('81J0ABCDEFGHJKMNPQRSTVWXYZ'), 'ULID above 7ZZZ…');
    assert.ok(!validID('01J0ABCDEFGHJKMNPQRSTVWXYI'), 'I is not Crockford');
    assert.ok(!validID(UUID.replace(/-/g, '_')));
    assert.ok(!validID(''));
  });
  it('names: plain pattern or member.<id>', () => {
    for (const ok of ['a', 'head_name', 'x9_', 'a'.repeat(64), 'member.' + UUID]) assert.ok(validFieldName(ok), ok);
    for (const bad of ['', 'A', '9a', 'a-b', 'a'.repeat(65), 'member.', 'member.x', '户主']) assert.ok(!validFieldName(bad), bad);
  });
});

describe('checkFields (syncproto.CheckHouseholdFields)', () => {
  it('accepts plain values, null removals, good members and locations', () => {
    assert.deepEqual(checkFields({
      head_name: '王建国', notes: null, income_per_capita: 5600.5, location: { lon: 104.1, lat: 30.2 },
      ['member.' + UUID]: { name: '李秀兰', relation: '配偶', birth_year: 1970 },
    }), []);
  });
  it('gives the Go codes, sorted by field, with Chinese messages', () => {
    const errs = checkFields({
      notes: 'x'.repeat(5000), Bad: 1, location: { lon: 181, lat: 0 },
      ['member.' + UUID]: { name: '  ' }, ['member.' + ULID]: { name: '张三', birth_year: 1980.5 },
    });
    assert.deepEqual(codes(errs), [
      ['Bad', 'invalid_field_name'], ['location', 'bad_location'],
      ['member.' + UUID, 'bad_member'], ['member.' + ULID, 'bad_member'], ['notes', 'value_too_large']]);
    assert.equal(errs[1].message, '位置须是有效的经纬度');
    assert.equal(errs[2].message, '家庭成员须有姓名');
  });
  it('counts bytes, not characters (4 KiB of UTF-8)', () => {
    assert.deepEqual(codes(checkFields({ notes: '字'.repeat(1364) })), []); // 4092 + 2 quotes
    assert.deepEqual(codes(checkFields({ notes: '字'.repeat(1365) })), [['notes', 'value_too_large']]);
  });
  it('locations: not an object, a string coordinate, latitude out of range', () => {
    for (const v of ['x', [1, 2], { lon: '1', lat: 2 }, { lon: 0, lat: -91 }]) {
      assert.deepEqual(codes(checkFields({ location: v })), [['location', 'bad_location']], JSON.stringify(v));
    }
  });
  it('too many fields', () => {
    const f = {};
    for (let i = 0; i < 257; i++) f['f' + i] = i;
    assert.equal(checkFields(f)[0].code, 'validation_failed');
  });
});

describe('change sets and the local view', () => {
  it('diffFields names changed and removed fields only', () => {
    const before = { a: 1, b: { y: 2, x: 1 }, c: 'x', d: null };
    const after = { a: 1, b: { x: 1, y: 2 }, c: 'z', e: 'new' };
    assert.deepEqual(diffFields(before, after), { c: 'z', e: 'new' });
    assert.deepEqual(diffFields({ a: 1, b: 2 }, { a: 1 }), { b: null });
    assert.equal(canon({ b: 1, a: [1, { d: 1, c: 2 }] }), '{"a":[1,{"c":2,"d":1}],"b":1}');
  });
  it('applyFields removes on null', () => {
    assert.deepEqual(applyFields({ a: 1, b: 2 }, { b: null, c: 3 }), { a: 1, c: 3 });
  });
  it('viewOf puts unsent edits on the server copy in order', () => {
    const pend = [
      { seq: 1, kind: 'household.update', body: { household_update: { household_id: 'h', fields: { phone: '1', notes: 'a' } } } },
      { seq: 2, kind: 'household.update', body: { household_update: { household_id: 'h', fields: { phone: '2', address: null } } } },
    ];
    assert.deepEqual(viewOf({ head_name: '王', address: 'x' }, pend), { head_name: '王', phone: '2', notes: 'a' });
  });
  it('parseField and memberValue', () => {
    assert.deepEqual(parseField('text', '  王  '), { value: '王' });
    assert.deepEqual(parseField('text', '   '), { value: undefined });
    assert.deepEqual(parseField('number', '5600.5'), { value: 5600.5 });
    assert.equal(parseField('number', '5千').error, 'not_number');
    assert.deepEqual(memberValue(' 李四 ', '子', '1990'), { value: { name: '李四', relation: '子', birth_year: 1990 } });
    assert.equal(memberValue('', '子', '').error, 'bad_member');
    assert.equal(memberValue('李四', '', '九零').error, 'bad_member');
  });
});

// A minimal transaction over in-memory stores, as db.js's Tx is used.
function memTx(stores) {
  const m = Object.fromEntries(Object.entries(stores).map(([k, rows]) => [k, new Map(rows.map((r) => [r.id ?? r.seq, r]))]));
  return {
    m,
    get: async (s, k) => m[s].get(k),
    put: async (s, v) => { m[s].set(v.id ?? v.seq, v); },
    all: async (s) => [...m[s].values()],
  };
}

describe('pull overlay and refused edits', () => {
  const upd = (seq, id, fields) => ({ seq, kind: 'household.update', body: { seq, household_update: { household_id: id, base_version: 5, fields } } });
  it('a pulled household keeps the unsent edit on top', async () => {
    const t = memTx({ households: [{ id: 'h1', fields: { head_name: '王', phone: '9' }, version: 7 }, { id: 'h2', fields: { head_name: '李' } }], outbox: [upd(3, 'h1', { phone: '1' })] });
    await overlayPending(t, [{ op: 'put', type: 'household', household: { id: 'h1' } }, { op: 'put', type: 'household', household: { id: 'h2' } }]);
    assert.deepEqual(t.m.households.get('h1').fields, { head_name: '王', phone: '1' });
    assert.deepEqual(t.m.households.get('h1').server_fields, { head_name: '王', phone: '9' });
    assert.equal(t.m.households.get('h2').server_fields, undefined);
  });
  it('a refused edit goes back to the server copy plus the edits still unsent', async () => {
    const t = memTx({
      households: [{ id: 'h1', fields: { head_name: '张', phone: '1', notes: 'n' }, server_fields: { head_name: '王' } }],
      outbox: [upd(4, 'h1', { notes: 'n' })],
    });
    await settleRejected(t, upd(3, 'h1', { head_name: '张', phone: '1' }), { code: 'out_of_scope', message: 'place G is outside' });
    const hh = t.m.households.get('h1');
    assert.deepEqual(hh.fields, { head_name: '王', notes: 'n' });
    assert.deepEqual(hh.rejected_edit, { code: 'out_of_scope', message: 'place G is outside' });
    assert.ok(hh.server_fields, 'still has an unsent edit');
  });
  it('a refused creation is marked with the reason', async () => {
    const t = memTx({ households: [{ id: 'h9', fields: { head_name: '新' }, local: true }], outbox: [] });
    await settleRejected(t, { seq: 1, kind: 'household.create', body: { household: { id: 'h9', fields: {} } } }, { code: 'duplicate_id', message: 'exists' });
    assert.equal(t.m.households.get('h9').rejected.code, 'duplicate_id');
    assert.match(rejectText('duplicate_id', 'exists'), /^编号与服务器上已有的农户重复：duplicate_id：exists$/);
  });
});

describe('conflict text in Chinese, Beijing time', () => {
  it('names the field, both values, who and when', () => {
    const x = conflictText({
      id: 'c', household_id: 'h', field: 'poverty_status', kept_value: 'lifted', losing_value: 'monitored',
      losing_device: 'dev-1234567890', losing_user: 'wangge_li', losing_hlc: '1796538600000-0001', state: 'open', sensitive: true,
      created_at: '2026-12-06T02:30:00Z',
    });
    assert.equal(x.field, '贫困状态');
    assert.equal(x.kept, '脱贫户');
    assert.equal(x.losing, '监测户');
    assert.equal(x.by, 'wangge_li，设备 dev-1234');
    assert.equal(x.when, '2026-12-06 14:30 北京时间');
    assert.equal(x.recorded, '2026-12-06 10:30 北京时间');
    assert.equal(x.state, '待督导处理');
    assert.ok(x.open);
  });
  it('members and empty values', () => {
    const f = { ['member.' + UUID]: { name: '李秀兰' } };
    assert.equal(fieldLabel('member.' + UUID, f), '家庭成员 李秀兰');
    assert.equal(fmtValue('member.' + UUID, { name: '李秀兰', relation: '配偶', birth_year: 1970 }), '李秀兰（配偶，1970 年生）');
    assert.equal(fmtValue('notes', null), '（空）');
    assert.equal(fmtValue('wubao', 'yes'), '是');
  });
});
