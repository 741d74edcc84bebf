// pouchbench.js: the PouchDB side of fieldsim bench p8. Each simulated
// device gets its own local PouchDB (LevelDB on disk) holding its
// documents; then every device replicates into the remote database at the
// same moment, as CHT's devices replicate into CouchDB, and the wall time
// until the last replication completes is printed.
//
//   node pouchbench.js DOCS.jsonl REMOTE_DB_URL LOCAL_DIR
//
// DOCS.jsonl holds one {"device": n, "doc": {...}} per line. The last line
// printed is JSON: {"seconds", "docs", "written", "devices", "load_seconds"}.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const PouchDB = require('pouchdb');

async function main() {
  const [docsFile, remoteURL, localDir] = process.argv.slice(2);
  if (!docsFile || !remoteURL || !localDir) {
    throw new Error('usage: node pouchbench.js DOCS.jsonl REMOTE_DB_URL LOCAL_DIR');
  }
  fs.mkdirSync(localDir, { recursive: true });
  const byDevice = new Map();
  const rl = readline.createInterface({ input: fs.createReadStream(docsFile), crlfDelay: Infinity });
  let total = 0;
  for await (const line of rl) {
    if (!line.trim()) continue;
    const { device, doc } = JSON.parse(line);
    if (!byDevice.has(device)) byDevice.set(device, []);
    byDevice.get(device).push(doc);
    total++;
  }
  const t0 = Date.now();
  const locals = [];
  for (const [device, docs] of byDevice) {
    const db = new PouchDB(path.join(localDir, 'device' + device));
    for (let i = 0; i < docs.length; i += 500) {
      const res = await db.bulkDocs(docs.slice(i, i + 500));
      const bad = res.find((r) => r.error);
      if (bad) throw new Error('local bulkDocs: ' + JSON.stringify(bad));
    }
    locals.push(db);
  }
  const loadSeconds = (Date.now() - t0) / 1000;
  const remote = new PouchDB(remoteURL);
  await remote.info(); // creates the database before the clock starts
  const start = process.hrtime.bigint();
  const results = await Promise.all(locals.map((db) => db.replicate.to(remoteURL)));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  let written = 0;
  for (const r of results) {
    if (!r.ok) throw new Error('replication failed: ' + JSON.stringify(r.errors));
    written += r.docs_written;
  }
  const info = await remote.info();
  if (info.doc_count !== total) {
    throw new Error(`remote holds ${info.doc_count} documents, want ${total}`);
  }
  for (const db of locals) await db.close();
  console.log(JSON.stringify({ seconds, docs: info.doc_count, written, devices: locals.length, load_seconds: loadSeconds }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
