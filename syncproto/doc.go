// Package syncproto is fieldsync's wire protocol: the messages a device
// and the server exchange, the rules both sides follow, and the pure
// helpers they share (form validation, hybrid logical clocks, cursor
// tokens, error codes). It does no I/O beyond io.Reader and io.Writer, so
// the device library, the server and tests all use the same code.
//
// This comment is written for someone writing a new client (an Android or
// iOS app) in another language.
//
// # Transport
//
// HTTP/1.1 or HTTP/2, JSON bodies (UTF-8), Content-Type application/json.
// Request bodies may be gzip-compressed (Content-Encoding: gzip); send
// Accept-Encoding: gzip and responses over 1 KiB come back compressed.
// Every sync request carries "protocol_version": 1, except a push in the
// compact form of version 2 (see Push); responses say 1. A server that
// cannot speak a request's version answers 426 with code
// "unsupported_protocol_version" and details {"min":..,"max":..}; it never
// guesses. See ProtocolVersion for the history. Unknown JSON fields
// are ignored by both sides, so a newer peer may add fields freely within
// a version.
//
// Encoding choice: JSON with gzip. We weighed CBOR (fxamacker/cbor) and
// protobuf. BenchmarkWireBytesPerVisit encodes a batch of 20 household
// survey visits (Chinese answers, GPS, two evidence references each):
// JSON+gzip is about 181 bytes a visit, CBOR+gzip about 203 (836 bytes of
// plain JSON). After gzip the repeated keys cost almost nothing, while
// JSON stays readable in logs and proxies, needs no code generation on
// Android or iOS, and every HTTP stack already gzips it. Protobuf would
// save a little more only by giving up the self-describing "unknown fields
// are ignored" property that rule 8 relies on.
//
// # Enrollment
//
// An admin issues a one-time code (typed, or scanned as the QR payload
// "<server>/app/#/enroll?code=<code>", the field app's URL). The device posts
// {"code","name","token"} to /api/v1/devices/enroll and receives 201
// {"device_id", "token"}. The token is one the device chose (32 to 128
// characters of base64url, from a secure random source) and saved before it
// asked; without one the server makes it. A code is spent once, but asking
// again with the same code and token answers 200 with the same device: an
// answer lost on a weak link does not lock the device out. The token goes
// in "Authorization: Bearer <token>" on every later request; a revoked
// device gets 401 "unauthorized" on its very next request and must stop
// syncing.
//
// # Ids and clocks
//
// The device makes every id (ULID or UUIDv7, see ValidID and NewID); the
// server never renames. Each mutation carries an HLC (hybrid logical
// clock) from the device's Clock, written as "<13-digit unix ms>-<4 hex>".
// Observe the server_hlc of every response so the device clock never runs
// behind what it has seen. A device HLC that runs ahead of the server by
// more than a few minutes is clamped (the result says clock_clamped); a
// clock that is behind is kept. Neither is ever a reason to reject.
//
// # Push: POST /api/v1/sync/push
//
// The device keeps an outbox: every local change is a Mutation with the
// next per-device sequence number (1, 2, 3, ... never reused), written in
// the same local transaction as the change itself. Push sends the oldest
// outbox mutations in order (at most MaxPushMutations per request; keep
// batches small, ~20, so a retry over a weak link is cheap):
//
//	{"protocol_version":1,"device_id":"...","mutations":[{"seq":41,"kind":"visit.create","hlc":"...","visit":{...}}, ...],
//	 "health":{"pending_mutations":3,"pending_blobs":2,"pending_bytes":512000,"oldest_pending":"...","app_version":"1.4.0"}}
//
// The server applies the batch in one transaction together with the
// device's last applied sequence, and answers only after commit:
//
//	{"protocol_version":1,"last_seq":43,"results":[{"seq":41,"status":"applied","version":17}, {"seq":42,"status":"rejected","code":"validation_failed","message":"..."}, ...],"server_hlc":"..."}
//
// Rules:
//   - A mutation whose seq the server already applied is not applied again;
//     its stored result is returned. Replaying a whole batch is always safe,
//     so after a timeout or a dropped connection just send it again.
//   - The first seq of a batch must be at most last_seq+1. A gap is refused
//     with 409 "sequence_gap" and details {"expected": n}.
//   - A replay is recognised by content: the server keeps a digest (SHA-256
//     of the mutation's canonical JSON: keys sorted, no insignificant
//     space) of every applied mutation. A seq it applied that comes again
//     with different content (a device restored from a backup, or
//     reinstalled with its old token, numbers new work from where its copy
//     stopped) is refused with 409 "sequence_reused" and details
//     {"seq": s, "last_seq": n}: s is the first reused number of the batch,
//     n the last seq the server applied. Nothing of the batch is applied.
//     Renumber the unsent mutations from s on to follow n (n+1, n+2, ...,
//     keeping their order, in one local transaction) and push again; the
//     ones before s are replays and get their stored answers.
//   - A mutation that can never apply (fails its form's validation, names
//     an unknown household, lies outside the device's places, reuses an id
//     with different content) is "rejected" with a code and message. It
//     still advances the sequence; show it to the worker and drop it from
//     the outbox. One bad record never blocks the queue. The server keeps
//     the rejected body, so nothing a device sent is lost.
//   - Delete outbox rows only after saving the results, in one local
//     transaction. A crash between push and save just repeats the push.
//
// The compact push (protocol version 2) says "protocol_version": 2 and
// may leave out what the server derives: "seq" on every mutation but the
// first (each is the previous one's plus 1), "kind" (the one payload field
// names it), and it may write an evidence sha256 as the 43 characters of
// its unpadded base64url encoding. The server reads it as the same push in
// version 1 form; a server that answers 426 with "max": 1 takes only that
// form. Mutation.Compact makes the compact form of a mutation.
//
// Mutation kinds (payload field in brackets): visit.create [visit],
// household.create [household], household.update [household_update],
// household.move [household_move], household.delete [household_delete],
// evidence.attach [evidence_attach].
//
// A visit records where it was made: "point" and "accuracy_m" (metres).
// When the device has no fix within the form's max_accuracy_m, the worker
// may save it anyway and say why in "gps_reason" (optional, at most 200
// code points, e.g. "山谷里没有信号"); the server flags such a visit for
// review (visit_without_gps, poor_gps_accuracy) and shows the reason with
// the flag. The field was added on 2026-12-06 without a new protocol
// version (see ProtocolVersion).
//
// Households are a flat map of fields (see HouseholdSchema). Members are
// fields "member.<member id>", so member lists merge member by member.
// An update names the household version the device started from
// (base_version) and only the fields it changed. The server merges field
// by field: a field nobody else changed since base_version applies; a field
// changed on both sides keeps the later HLC (server sequence breaks ties)
// and stores the other value in a conflict record; sensitive fields
// (head_name, poverty_status, dibao_class, location) are never settled
// automatically: the current value stays and an open conflict waits for a
// supervisor. Visits are append-only; a correction is a new visit naming
// corrects_visit_id.
//
// # Pull: POST /api/v1/sync/pull
//
//	{"protocol_version":1,"device_id":"...","cursor":"<opaque>","max_bytes":262144}
//	→ {"protocol_version":1,"ops":[...],"cursor":"<opaque>","has_more":true,"server_hlc":"..."}
//
// Start with an empty cursor. Apply all ops of a page AND save the new
// cursor in one local transaction, then pull again while has_more. The
// cursor is opaque, HMAC-signed and bound to the device: a forged, altered
// or other device's cursor gets 400 "invalid_cursor".
//
// Ops, in order:
//   - put: store the entity (type place, form, household, visit, conflict,
//     task), replacing any local copy. For households, keep unpushed local
//     edits on top of the new server copy.
//   - delete: remove the entity (it was deleted, or it left your places,
//     e.g. a household that moved to another village).
//   - scope_enter {place}: the place and its descendants joined your scope;
//     their entities follow as puts.
//   - scope_leave {place}: drop everything held under that place and its
//     descendants. Never touch the outbox: unpushed edits are still pushed
//     (and reported if they are now out of scope).
//   - reset: drop the whole local copy (never the outbox) and apply the
//     ops that follow; they rebuild it. Sent when the cursor is older than
//     the retained change log or comes from another server epoch (after a
//     restore).
//
// Every page also carries last_seq, the last of the device's own mutation
// sequence numbers the server holds. If the device has answers for later
// ones, the server lost them (it was restored from a backup): put those
// mutations back in the outbox from the saved answers and push again.
//
// The server's change log is ordered by commit, so a cursor never skips
// a change that commits later:
//
//   - On SQLite, sequence numbers are assigned inside the single writer's
//     transaction, which holds the database's write lock from its first
//     write to its commit.
//   - On PostgreSQL, with any number of server instances, an identity or
//     sequence column would not do: transaction A may take seq 10, B seq
//     11, B commit first, and a puller that read 11 would never see 10. So
//     every write transaction first locks one row (sync_head, SELECT ...
//     FOR UPDATE) and holds it to its commit; a change takes its seq from
//     that row (sync_head.seq + 1, in the same transaction). Writers thus
//     commit one at a time, in seq order, and PostgreSQL makes a commit
//     visible before it releases its locks. A pull reads sync_head.seq
//     and the changes up to it in one REPEATABLE READ snapshot: that
//     snapshot holds every change up to the head it read and none after.
//     Group commit keeps the single lock cheap: one transaction carries
//     the pushes of many devices. The cost is that writes do not run in
//     parallel across instances; reads, uploads and evidence analysis do.
//     A snapshot-xmin horizon on the change log would let writers run in
//     parallel, at the price of pulls that wait for the oldest open
//     writer; see the README's "Scaling out".
//
// Pages are capped at max_bytes
// (between MinPullBytes and MaxPullBytes) of encoded ops. The place tree
// and forms a device needs come in the same pull.
//
// # Evidence
//
// Photos, scans and signatures travel apart from records. A visit
// references each as {sha256, size, media_type, slot}. After pushing, the
// device asks which hashes the server lacks (POST /api/v1/evidence/missing;
// a blob counts as present only if a visit in the device's scope links it
// and that visit's device sent its bytes: otherwise the device uploads
// them, which proves it has the photo, and the server still stores one copy)
// and uploads each with the tus 1.0 resumable protocol at /api/v1/uploads/
// (creation with the sha256 in Upload-Metadata, HEAD for the offset, PATCH
// with Upload-Checksum), keeping the upload URL and offset so it resumes
// after a cut or an app restart. A creation for a file the device is
// already uploading (same sha256 and length) is answered 201 with the
// earlier upload's Location and its Upload-Offset, so a creation whose
// answer was lost leaves no second upload behind; the device PATCHes from
// that offset. The server re-hashes before it marks a blob present.
//
// # Errors
//
// Every error is {"code": "...", "message": "...", "details": {...}} with
// the HTTP status from Code.HTTPStatus. Retry with backoff and jitter on
// 429, 5xx and network errors (503 and 507 storage_full carry
// Retry-After); never retry 4xx
// other than 429, 409 sequence_gap after fixing the gap, and 409
// sequence_reused after renumbering.
//
// A body with code "validation_failed" may list "fields":
// [{"field": "...", "reason": "...", "code": "..."}]. The code is a stable
// FieldCode ("required", "below_min", "not_a_date", ...) for the client to
// show in its own words; the reason is English for developers. The field
// app validates answers before it sends them with the same rules
// (mobileclient/webapp/js/formcheck.js); the shared vectors in
// testdata/vectors, run by both sides' tests, pin every verdict.
package syncproto
