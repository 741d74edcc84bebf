// Runs the shared validation vectors (syncproto/testdata/vectors, the same
// files syncproto's TestVectors_Go runs) through formcheck.js, and checks
// that it gives the Go verdict on every one. Run: node --test mobileclient/webapp/test/
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  JSONNumber, checkForm, checkFormError, checkGPSReason, formMessagesZh, formatMessage, messagesZh, missingSlots,
  parseJSON, slotAccepts, stringifyJSON, validateAnswers, validateAnswersJSON,
} from '../js/formcheck.js';

const here = dirname(fileURLToPath(import.meta.url));
const testdata = join(here, '..', '..', '..', 'syncproto', 'testdata');
const vectorDir = join(testdata, 'vectors');

// plain turns a parseJSON value (JSONNumber numbers) into what JSON.parse
// gives, as the app holds a served form.
const plain = (v) => JSON.parse(stringifyJSON(v));
const verdict = (errs) => errs.map(({ field, code }) => ({ field, code }));

const files = readdirSync(vectorDir).filter((f) => f.endsWith('.json')).sort();
const counts = { answers: 0, slots: 0, accepts: 0, formdef: 0, gpsReason: 0 };

for (const file of files) {
  const doc = parseJSON(readFileSync(join(vectorDir, file), 'utf8'));
  describe(file, () => {
    for (const v of doc.vectors) {
      const rawForm = v.form !== undefined ? v.form : doc.form;
      if ('answers' in v) {
        counts.answers++;
        it(v.name, () => {
          const form = plain(rawForm);
          const text = stringifyJSON(v.answers); // compact, literals as written
          const want = v.errors.map(({ field, code }) => ({ field, code }));
          // The exact text, literals kept.
          const got = validateAnswersJSON(form, text);
          assert.deepEqual(verdict(got), want, `validateAnswersJSON(${text.slice(0, 200)})`);
          for (const e of got) {
            assert.equal(typeof e.message, 'string');
            assert.ok(e.message.length > 0 && !e.message.includes('{'), `message for ${e.code}: ${e.message}`);
          }
          // Values holding JSONNumbers: the same.
          if (v.answers !== null) assert.deepEqual(verdict(validateAnswers(form, v.answers)), want, 'validateAnswers(raw values)');
          // Plain JSON.parse values: the same whenever JSON.stringify sends
          // the same text back (3.0, 1e3, -0 or 2^53+1 do not survive it).
          const parsed = JSON.parse(text);
          if (JSON.stringify(parsed) === text) {
            assert.deepEqual(verdict(validateAnswers(form, parsed)), want, 'validateAnswers(JSON.parse values)');
          }
        });
      } else if ('present' in v) {
        counts.slots++;
        it(v.name, () => {
          const present = v.present === null ? null : plain(v.present);
          assert.deepEqual(missingSlots(plain(rawForm), present), v.missing);
          if (present) assert.deepEqual(missingSlots(plain(rawForm), new Map(Object.entries(present))), v.missing);
        });
      } else if ('gps_reason' in v) {
        counts.gpsReason++;
        it(v.name, () => {
          assert.equal(checkGPSReason(v.gps_reason), v.gps_reason_code);
        });
      } else if ('slot' in v) {
        counts.accepts++;
        it(v.name, () => {
          assert.equal(slotAccepts(plain(v.slot), v.media_type), v.accepts);
        });
      } else if ('form_error' in v) {
        counts.formdef++;
        it(v.name, () => {
          const got = checkFormError(plain(rawForm));
          assert.equal(got === null ? null : got.code, v.form_error);
          const msg = checkForm(plain(rawForm));
          assert.equal(msg === null, v.form_error === null);
          if (msg !== null) assert.equal(msg, formMessagesZh[v.form_error]);
        });
      } else {
        it(v.name, () => assert.fail('vector of unknown shape'));
      }
    }
  });
}

describe('coverage', () => {
  it('at least 60 answer vectors', () => {
    assert.ok(counts.answers >= 60, `${counts.answers} answer vectors`);
    assert.ok(counts.slots > 0 && counts.accepts > 0 && counts.formdef > 0 && counts.gpsReason > 0, JSON.stringify(counts));
  });
  it('every field code has a Chinese message and nothing else does', () => {
    const codes = JSON.parse(readFileSync(join(testdata, 'field_codes.json'), 'utf8'));
    assert.deepEqual(Object.keys(messagesZh).filter((k) => k !== 'unknown').sort(), [...codes].sort());
    for (const c of codes) assert.match(messagesZh[c], /[\u4e00-\u9fff]/, c);
  });
  it('every form code has a Chinese message and nothing else does', () => {
    const codes = JSON.parse(readFileSync(join(testdata, 'form_codes.json'), 'utf8'));
    assert.deepEqual(Object.keys(formMessagesZh).filter((k) => k !== 'unknown').sort(), [...codes].sort());
  });
});

describe('formcheck API', () => {
  const form = {
    id: 'f', title: '表', fields: [
      { name: 'n', type: 'integer', label: '人数', required: true, min: 1, max: 30 },
      { name: 't', type: 'text', label: '备注', min: 2 },
      { name: 'd', type: 'decimal', label: '收入' },
    ],
  };
  it('plain values are judged as JSON.stringify sends them', () => {
    assert.deepEqual(verdict(validateAnswers(form, { n: 3 })), []);
    assert.deepEqual(verdict(validateAnswers(form, { n: -0, d: -0 })), [{ field: 'n', code: 'below_min' }]);
    assert.deepEqual(verdict(validateAnswers(form, { n: NaN })), [{ field: 'n', code: 'required' }]);
    assert.deepEqual(verdict(validateAnswers(form, { n: 3, d: Infinity })), []); // sent as null
    assert.deepEqual(verdict(validateAnswers(form, { n: 1e21 })), [{ field: 'n', code: 'not_integer' }]); // "1e+21"
    assert.deepEqual(verdict(validateAnswers(form, { n: 2.5 })), [{ field: 'n', code: 'not_integer' }]);
    assert.deepEqual(verdict(validateAnswers(form, { n: 3, t: undefined })), []);
    assert.deepEqual(verdict(validateAnswers(form, { n: 9007199254740993n })), [{ field: 'n', code: 'integer_out_of_range' }]);
    assert.deepEqual(verdict(validateAnswers(form, { n: new JSONNumber('3.0') })), [{ field: 'n', code: 'not_integer' }]);
    assert.deepEqual(verdict(validateAnswers(form, null)), [{ field: 'n', code: 'required' }]);
    assert.throws(() => validateAnswers(form, [1]), TypeError);
    assert.throws(() => validateAnswersJSON(form, '[1]'), TypeError);
    assert.throws(() => validateAnswersJSON(form, '{"n": 07}'), SyntaxError);
  });
  it('messages are Chinese with the bounds filled in', () => {
    const errs = validateAnswers(form, { n: 0, t: 'a' });
    assert.deepEqual(errs.map((e) => e.message), ['不能小于 1', '至少 2 个字']);
    const long = validateAnswers({ fields: [{ name: 'x', type: 'text', label: 'x' }] }, { x: 'a'.repeat(10001) });
    assert.equal(long[0].message, '最多 10000 个字');
    assert.equal(formatMessage('from_a_newer_server'), messagesZh.unknown);
  });
  it('stringifyJSON sends what was validated', () => {
    assert.equal(stringifyJSON({ a: new JSONNumber('1.0'), b: 12345678901234567890n, c: [undefined, NaN], d: undefined }),
      '{"a":1.0,"b":12345678901234567890,"c":[null,null]}');
    assert.equal(stringifyJSON({ s: 'x\ud800' }), '{"s":"x\ufffd"}');
  });
  it('parseJSON is strict and keeps literals', () => {
    for (const bad of ['', '07', '+1', '.5', '1.', '1e', '-', 'NaN', 'Infinity', '[1,]', '{"a":1,}', "{'a':1}",
      '"\t"', '"\\x"', '"\\u12"', '{"a" 1}', 'tru', '1 2', '[', '{"a":1', 'nul']) {
      assert.throws(() => parseJSON(bad), SyntaxError, JSON.stringify(bad));
    }
    const v = parseJSON(' {"a": [1.0, -0, 1E3], "__proto__": {"x": "\\ud800\\u0041"}, "a": 2} ');
    assert.equal(v.a.text, '2');
    assert.equal(Object.getPrototypeOf(v), null);
    assert.equal(v.__proto__.x, '\ufffdA'); // eslint-disable-line no-proto
    assert.deepEqual(parseJSON('[1.0,-0,1E3]').map(String), ['1.0', '-0', '1E3']);
    assert.throws(() => parseJSON('['.repeat(2000) + ']'.repeat(2000)), SyntaxError);
  });
});
