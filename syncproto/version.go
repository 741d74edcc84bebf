package syncproto

// ProtocolVersion is the version of the sync protocol's messages whose form
// has not changed since it: every response carries it, so that a device of
// any supported version reads the answer, and so does every request but a
// push in the compact form of version 2. A server accepts requests of
// MinProtocolVersion..MaxProtocolVersion (the protocol_version body field,
// or the Fieldsync-Protocol header on requests without a body) and answers
// any other version with CodeUnsupportedVersion and the range it supports,
// never with a silent misread.
//
// History (append only; a new version gets a date and what changed):
//
//   - 1 (2026-11-28): first version. JSON bodies, optional gzip.
//     Push of visit.create, household.create, household.update,
//     household.move, household.delete and evidence.attach with per-device
//     sequence numbers; pull of put, delete, scope_enter, scope_leave and
//     reset ops over an HMAC'd, device-bound cursor; hybrid logical clocks
//     as "<13-digit unix ms>-<4 hex counter>" strings; pull responses
//     carry the device's last_seq as the server holds it, so a device can
//     re-send what a restored server lost.
//   - 2 (2026-11-29): the compact push. A push request that says
//     "protocol_version": 2 may leave out what the server derives: the
//     seq of every mutation but the first (it is the previous one's plus
//     1) and the kind of every mutation (the one payload field it carries
//     names it); and it may write the sha256 of an evidence reference as
//     the 43 characters of the hash's unpadded base64url encoding instead
//     of 64 hex digits. DecodePushRequest fills these in (Mutation.Compact
//     makes them), so the server applies, answers and stores a compact
//     push exactly as the same push in version 1 form, and a compact
//     retry of a version 1 push (or the reverse) is the same mutation.
//     Nothing else changed: responses keep the version 1 form and say 1,
//     and a device sends 1 on every other request. A version 1 server
//     answers a version 2 push with 426 and "max": 1: push to it in the
//     version 1 form.
//   - 2026-12-06, additive (no new version): a visit may carry
//     "gps_reason", the worker's stated reason for saving it without a
//     GPS fix within the form's max_accuracy_m (at most 200 code points;
//     longer is rejected with validation_failed). It is optional, so the
//     visits of older devices stay valid, and older servers ignore it as
//     an unknown field. Pulls return it with the visit.
const ProtocolVersion = 1

// MaxProtocolVersion is the newest version this package speaks (the
// version of compact push requests).
const MaxProtocolVersion = 2

// MinProtocolVersion is the oldest version the server still accepts.
const MinProtocolVersion = 1

// SupportsVersion reports whether a peer speaking v can talk to this package.
func SupportsVersion(v int) bool {
	return v >= MinProtocolVersion && v <= MaxProtocolVersion
}
