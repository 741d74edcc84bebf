package syncproto

// ProtocolVersion is the version of the sync protocol this package speaks.
// Every request carries it (the protocol_version body field, or the
// Fieldsync-Protocol header on requests without a body); the server answers
// a version it does not support with CodeUnsupportedVersion and the range it
// does support, never with a silent misread.
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
const ProtocolVersion = 1

// MinProtocolVersion is the oldest version the server still accepts.
const MinProtocolVersion = 1

// SupportsVersion reports whether a peer speaking v can talk to this package.
func SupportsVersion(v int) bool {
	return v >= MinProtocolVersion && v <= ProtocolVersion
}
