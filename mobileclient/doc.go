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
// ErrUnsupportedVersion and ErrSequenceGap.
//
// Evidence uploads (DESIGN.md rule 7) are the next piece: the uploads table
// exists and Pending and the outbox health already count its rows; an
// AddEvidence call will queue a blob there together with an evidence.attach
// mutation (or the visit's Evidence list), and Sync will run the upload
// step (ask which hashes the server lacks, then tus creation, HEAD offset,
// PATCH with checksum) between the push and the pull. Nothing of it is
// built yet.
package mobileclient
