// Package mobileclient is the device side of fieldsync: a Go library with
// its own SQLite database that a field app (through gomobile) or the
// fieldcli tool uses to work offline and sync when a link appears.
//
// The device database (schema in migrations/device) holds:
//
//   - the outbox: every local change (a visit, a household created, edited,
//     moved or deleted) is a syncproto.Mutation with the next per-device
//     sequence number, written in the same transaction as its local effect,
//     so a crash can never keep one without the other;
//   - the results the server gave for pushed mutations (rejections are
//     shown to the worker with their code and reason);
//   - the local copy of the worker's scope: places, forms, households,
//     visits, conflicts and tasks, plus the pull cursor, saved in the same
//     transaction as the ops it covers;
//   - the upload queue for evidence blobs (see below).
//
// Households keep the server's copy (base) and a local view. The view is
// the base, plus changes the server has applied but the device has not yet
// pulled back, plus the unpushed outbox mutations of that household; it is
// recomputed whenever one of them changes, so unpushed local edits survive
// a pull, a scope change and a reset.
//
// Sync pushes the outbox in sequence order in small gzip-compressed
// batches, saving the results and dropping the answered rows in one
// transaction, then pulls pages until the server has no more. A push
// repeated after a lost answer or a crash carries the same sequence
// numbers and byte-identical bodies, and the server answers it from its
// stored results, so nothing is lost and nothing is applied twice.
// Network errors, 5xx and 429 answers are retried with exponential backoff
// and full jitter; 401 (revoked device), 426 (unsupported protocol version)
// and sequence gaps are returned at once as ErrUnauthorized,
// ErrUnsupportedVersion and ErrSequenceGap. A sequence_reused answer (this
// device's database was restored from a backup, so it numbered new work
// with numbers the server had applied from the lost copy) is repaired on
// its own: the unsent outbox is renumbered after the server's last seq in
// one local transaction and pushed again (SyncReport.Renumbered).
//
// Evidence (DESIGN.md rule 7) travels apart from records. PrepareEvidence
// readies a file the app made: a photo (JPEG or PNG) longer than
// Options.MaxPhotoPx on its long side is downscaled and re-encoded as JPEG
// with the original's EXIF block (capture time, GPS) spliced back in; a
// smaller JPEG or PNG, or any other file (a PDF scan), is kept byte for
// byte. The result is hashed and copied into the client's folder
// (EvidenceDir/<sha256>), and the returned syncproto.EvidenceRef goes into
// the visit given to RecordVisit, which queues the upload in the same
// transaction as the visit. AttachEvidence does both for a visit already
// on the device, with an evidence.attach mutation.
//
// Sync uploads between the push (which makes the visits known: the server
// accepts uploads only for blobs a pushed visit names) and the pull. It
// asks the server which hashes it lacks (POST /api/v1/evidence/missing)
// and marks the others done, then uploads each missing one with tus 1.0:
// creation, then PATCHes of Options.ChunkSize bytes (with their
// Upload-Checksum if Options.ChunkChecksums). The upload's path and the
// offset the server confirmed are saved after every answer, so an upload
// resumes, after a cut link or an app restart, with a PATCH at the saved
// offset, without a HEAD first: on a weak link a HEAD's round trip can
// take all the time between two cuts. When a cut PATCH may have landed
// more than its answer confirmed, the next PATCH waits for 100 Continue
// (or, if the transport does not wait, a HEAD asks first), and a 409
// offset_mismatch carries the server's offset to go on from. A 404
// or 410 (the server dropped an old partial upload) starts a new one. On
// a link that cuts, the rest of the step sends smaller PATCHes without
// checksums: the server drops a checksummed chunk that arrives only in
// part, but keeps every byte of an unchecksummed one, and it checks the
// SHA-256 of the whole file before it stores anything. Before sending, the
// device re-hashes its copy: a file that no longer matches (and a
// hash_mismatch from the server, when the copy has changed or it happens
// twice) marks the upload failed, reported in SyncReport.BlobsFailed and
// Uploads, and never retried. With the UploadRecordsOnly policy
// (SetUploadPolicy) Sync moves records only and photos wait; Pending and
// the outbox health count them.
//
// Once the server acknowledges a blob (its upload finished, or it said it
// holds the blob already) the device deletes its copy in EvidenceDir, as
// the web field app deletes its photo bytes; the upload queue keeps the
// blob's hash, size and media type. Open deletes the copies of
// acknowledged blobs that a crash left between the acknowledgement and the
// deletion; copies still waiting, failed ones and files not yet recorded
// in a visit stay.
package mobileclient
