// Push batch sizing, as the Go device library sizes its pushes
// (mobileclient Options.MaxBatch 0): each sync's first push carries at
// most START_BATCH mutations; every full push answered within
// GROW_WITHIN_MS doubles the next, up to GROWN_BATCH, as TCP's slow start
// grows its window. A slow answer stops the growth, and the next sync
// starts small again, so a weak link never risks a big body while a good
// one sends a long outbox in few round trips. A push also stays under
// MAX_PUSH_BYTES of encoded mutations (one larger mutation goes alone).

export const START_BATCH = 20;
export const GROWN_BATCH = 200; // syncproto.MaxPushMutations is 500
export const GROW_WITHIN_MS = 2000;
export const MAX_PUSH_BYTES = 256 * 1024;

/**
 * nextBatch is the limit of the next push after one of `sent` mutations
 * under `limit` was answered in `elapsedMs`.
 */
export function nextBatch(limit, sent, elapsedMs) {
  if (sent >= limit && elapsedMs < GROW_WITHIN_MS) return Math.min(2 * limit, GROWN_BATCH);
  return limit;
}

/**
 * takeBatch returns the leading outbox rows that fit in maxBytes of
 * encoded bodies (at least one row), in order.
 */
export function takeBatch(rows, maxBytes = MAX_PUSH_BYTES) {
  const enc = new TextEncoder();
  let size = 0;
  const out = [];
  for (const r of rows) {
    const n = enc.encode(JSON.stringify(r.body)).length;
    if (out.length > 0 && size + n > maxBytes) break;
    out.push(r);
    size += n;
  }
  return out;
}
