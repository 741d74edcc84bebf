// The enrollment QR's payload (server/auth.EnrollmentPayload: the app's
// URL "<server>/app/#/enroll?code=...") as the app reads it when scanned or
// opened. Run: node --test mobileclient/webapp/test/
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { enrollCodeFromHash, parseEnrollQR } from '../js/ui.js';

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
