// The enrollment QR's payload (server/auth.EnrollmentPayload: the app's
// URL "<server>/app/#/enroll?code=...") as the app reads it when scanned or
// opened. Run: node --test mobileclient/webapp/test/
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { ENROLL_ASK, enrollCodeFromHash, enrollToken, parseEnrollQR } from '../js/ui.js';

describe('enrollment QR', () => {
  it('reads the app URL the console shows', () => {
    assert.deepEqual(parseEnrollQR('https://fs.example.cn/app/#/enroll?code=K7QX-M2PD-9RTA'),
      { code: 'K7QX-M2PD-9RTA', origin: 'https://fs.example.cn', url: 'https://fs.example.cn/app/#/enroll?code=K7QX-M2PD-9RTA' });
    assert.equal(parseEnrollQR('http://192.168.1.5:8080/app/#/enroll?code=AB%2DCD').code, 'AB-CD');
  });
  it('reads the older fieldsync: payload and a bare code', () => {
    assert.deepEqual(parseEnrollQR('fieldsync://enroll?server=http%3A%2F%2Fx&code=ABCD-EFGH'), { code: 'ABCD-EFGH' });
    assert.deepEqual(parseEnrollQR(' ABCD-EFGH-JKLM '), { code: 'ABCD-EFGH-JKLM' });
  });
  it('refuses what is not an enrollment code', () => {
    for (const s of ['https://example.cn/some/page', 'https://x/app/#/enroll?nocode=1', 'fieldsync://enroll?server=x', '中文不是登记码', 'a b']) {
      assert.equal(parseEnrollQR(s), null, s);
    }
  });
  it('takes the code from the hash the app is opened with', () => {
    assert.equal(enrollCodeFromHash('#/enroll?code=K7QX-M2PD-9RTA'), 'K7QX-M2PD-9RTA');
    assert.equal(enrollCodeFromHash('#enroll?code=AB'), 'AB');
    assert.equal(enrollCodeFromHash('#/'), '');
    assert.equal(enrollCodeFromHash('#/places'), '');
    assert.equal(enrollCodeFromHash(''), '');
  });
});

// A Storage with localStorage's getItem/setItem.
function memoryStorage(init = {}) {
  const m = new Map(Object.entries(init));
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), map: m };
}

describe('enrollment token', () => {
  it('is 43 characters of base64url from 32 random bytes, saved before it is sent', () => {
    for (const fill of [0, 0xfb, 0xff, 0x3e]) {
      const st = memoryStorage();
      const tok = enrollToken(st, 'K7QX-M2PD-9RTA', (n) => new Uint8Array(n).fill(fill));
      assert.match(tok, /^[A-Za-z0-9_-]{43}$/, `bytes 0x${fill.toString(16)}`);
      assert.deepEqual(JSON.parse(st.getItem(ENROLL_ASK)), { code: 'K7QX-M2PD-9RTA'.replace(/-/g, ''), token: tok });
    }
    const a = enrollToken(memoryStorage(), 'AB'), b = enrollToken(memoryStorage(), 'AB');
    assert.notEqual(a, b, 'two devices choose two tokens');
  });
  it('is the same when the same code is asked for again, typed any way', () => {
    const st = memoryStorage();
    const tok = enrollToken(st, 'K7QX-M2PD-9RTA');
    for (const again of ['K7QX-M2PD-9RTA', 'k7qx m2pd 9rta', ' K7QXM2PD9RTA ']) {
      assert.equal(enrollToken(st, again), tok, again);
    }
  });
  it('is new for another code, and replaces what is not a saved ask', () => {
    const st = memoryStorage();
    const tok = enrollToken(st, 'AAAA-BBBB');
    const other = enrollToken(st, 'CCCC-DDDD');
    assert.notEqual(other, tok);
    assert.equal(JSON.parse(st.getItem(ENROLL_ASK)).code, 'CCCCDDDD');
    for (const junk of ['not json', '{"code":"AAAABBBB","token":"short"}', '{"code":"AAAABBBB","token":"' + 'a'.repeat(40) + '+"}', 'null', '[]']) {
      const s = memoryStorage({ [ENROLL_ASK]: junk });
      const t = enrollToken(s, 'AAAA-BBBB');
      assert.match(t, /^[A-Za-z0-9_-]{43}$/, junk);
      assert.equal(JSON.parse(s.getItem(ENROLL_ASK)).token, t);
    }
  });
});
