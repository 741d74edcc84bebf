// Uploads a file to fieldsync with the official tus client, tus-js-client
// (run by upload's TestTusJSClient; node modules come from
// $FIELDSYNC_TEST_NODE_MODULES, installed by .ci/test).
//
//   node tus_upload.js <endpoint> <device token> <file> <sha256> <mode>
//
// mode: "stream"   a file stream in 64 KiB chunks (several PATCHes)
//       "buffer"   a Buffer, 100 KiB chunks, data sent with the creation
//                  (creation-with-upload)
// Prints {"url": ..., "offset": ...} on success; exits 1 on error.
'use strict';
const fs = require('fs');
const path = require('path');
const tus = require(path.join(process.env.FIELDSYNC_TEST_NODE_MODULES, 'tus-js-client'));

const [endpoint, token, file, sha256, mode] = process.argv.slice(2);
const size = fs.statSync(file).size;
const opts = {
  endpoint,
  uploadSize: size,
  retryDelays: [0, 200, 1000],
  headers: { Authorization: 'Bearer ' + token },
  metadata: { sha256, filename: path.basename(file), filetype: 'image/jpeg' },
  onError(err) {
    console.error('tus-js-client error: ' + err);
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, offset: lastOffset }));
  },
  onProgress(sent) {
    lastOffset = sent;
  },
};
let lastOffset = 0;
let source;
if (mode === 'buffer') {
  source = fs.readFileSync(file);
  opts.chunkSize = 100 * 1024;
  opts.uploadDataDuringCreation = true;
} else {
  source = fs.createReadStream(file);
  opts.chunkSize = 64 * 1024;
}
const upload = new tus.Upload(source, opts);
upload.start();
