// Push batch sizing of the field app (js/batch.js), the same rule as the
// Go device library's adaptive MaxBatch. Run: node --test mobileclient/webapp/test/
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { START_BATCH, GROWN_BATCH, GROW_WITHIN_MS, MAX_PUSH_BYTES, nextBatch, takeBatch } from '../js/batch.js';

describe('push batch growth', () => {
  it('doubles after each full, quick push, up to GROWN_BATCH', () => {
    const seen = [];
    let limit = START_BATCH;
    for (let i = 0; i < 10; i++) {
      seen.push(limit);
      limit = nextBatch(limit, limit, 100);
    }
    assert.deepEqual(seen, [20, 40, 80, 160, 200, 200, 200, 200, 200, 200]);
    assert.equal(GROWN_BATCH, 200);
  });
  it('does not grow after a slow answer or a short batch', () => {
    assert.equal(nextBatch(20, 20, GROW_WITHIN_MS), 20);
    assert.equal(nextBatch(20, 20, 30000), 20);
    assert.equal(nextBatch(80, 79, 10), 80);
    assert.equal(nextBatch(40, 1, 0), 40);
  });
  for (const [limit, ms, want] of [[1, 0, 2], [3, 1999, 6], [150, 5, 200], [199, 5, 200], [200, 5, 200]]) {
    it(`limit ${limit} answered in ${ms} ms gives ${want}`, () => assert.equal(nextBatch(limit, limit, ms), want));
  }
});

describe('push batch bytes', () => {
  const row = (seq, n) => ({ seq, body: { seq, note: '户'.repeat(n) } });
  it('keeps every row while under the bound', () => {
    for (const n of [0, 1, 5, 20, 200]) {
      const rows = Array.from({ length: n }, (_, i) => row(i + 1, 10));
      assert.deepEqual(takeBatch(rows).map((r) => r.seq), rows.map((r) => r.seq));
    }
  });
  it('stops before the row that would pass the bound, counting UTF-8 bytes', () => {
    // '户' is 3 bytes in UTF-8: 20 rows of ~30 KB each; 8 fit in 256 KiB.
    const rows = Array.from({ length: 20 }, (_, i) => row(i + 1, 10000));
    const one = new TextEncoder().encode(JSON.stringify(rows[0].body)).length;
    const got = takeBatch(rows);
    assert.equal(got.length, Math.floor(MAX_PUSH_BYTES / one));
    assert.deepEqual(got.map((r) => r.seq), rows.slice(0, got.length).map((r) => r.seq));
    assert.deepEqual(takeBatch(rows, one * 3).map((r) => r.seq), [1, 2, 3]);
    assert.deepEqual(takeBatch(rows, one * 3 - 1).map((r) => r.seq), [1, 2]);
  });
  it('sends one oversized row alone', () => {
    const rows = [row(1, 200000), row(2, 1)];
    assert.deepEqual(takeBatch(rows).map((r) => r.seq), [1]);
    assert.deepEqual(takeBatch([row(1, 1), row(2, 200000)]).map((r) => r.seq), [1]);
  });
});
