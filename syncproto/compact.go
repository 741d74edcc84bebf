package syncproto

import (
	"encoding/base64"
	"encoding/hex"
)

// Compact returns m in the compact form of a version 2 push (see
// ProtocolVersion): without its kind, which its payload implies, without
// its seq unless keepSeq (a push keeps the first mutation's seq, and any
// that does not follow the one before), and with the sha256 of its
// evidence references in unpadded base64url. m itself is not changed.
// DecodePushRequest turns the compact form back into m.
func (m Mutation) Compact(keepSeq bool) Mutation {
	if !keepSeq {
		m.Seq = 0
	}
	if m.Kind == m.impliedKind() {
		m.Kind = ""
	}
	if m.Visit != nil && len(m.Visit.Evidence) > 0 {
		v := *m.Visit
		v.Evidence = make([]EvidenceRef, len(m.Visit.Evidence))
		for i, e := range m.Visit.Evidence {
			e.SHA256 = compactSHA256(e.SHA256)
			v.Evidence[i] = e
		}
		m.Visit = &v
	}
	if m.EvidenceAttach != nil {
		a := *m.EvidenceAttach
		a.Evidence.SHA256 = compactSHA256(a.Evidence.SHA256)
		m.EvidenceAttach = &a
	}
	return m
}

// expand undoes Compact, except the seq (which needs the mutation before).
func (m *Mutation) expand() {
	if m.Kind == "" {
		m.Kind = m.impliedKind()
	}
	if m.Visit != nil {
		for i := range m.Visit.Evidence {
			m.Visit.Evidence[i].SHA256 = expandSHA256(m.Visit.Evidence[i].SHA256)
		}
	}
	if m.EvidenceAttach != nil {
		m.EvidenceAttach.Evidence.SHA256 = expandSHA256(m.EvidenceAttach.Evidence.SHA256)
	}
}

// impliedKind is the kind named by m's payload, "" unless exactly one
// payload field is set.
func (m *Mutation) impliedKind() MutationKind {
	var k MutationKind
	n := 0
	for _, p := range []struct {
		set  bool
		kind MutationKind
	}{
		{m.Visit != nil, KindVisitCreate},
		{m.Household != nil, KindHouseholdCreate},
		{m.HouseholdUpdate != nil, KindHouseholdUpdate},
		{m.HouseholdMove != nil, KindHouseholdMove},
		{m.HouseholdDelete != nil, KindHouseholdDelete},
		{m.EvidenceAttach != nil, KindEvidenceAttach},
	} {
		if p.set {
			k, n = p.kind, n+1
		}
	}
	if n != 1 {
		return ""
	}
	return k
}

// compactSHA256 writes a hex SHA-256 in unpadded base64url (43
// characters); anything else is kept as it is.
func compactSHA256(s string) string {
	if !ValidSHA256(s) {
		return s
	}
	b, _ := hex.DecodeString(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

// expandSHA256 turns a SHA-256 in unpadded base64url back into 64 lowercase
// hex digits; anything else is kept as it is (and Check judges it).
func expandSHA256(s string) string {
	if len(s) != 43 {
		return s
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != 32 {
		return s
	}
	return hex.EncodeToString(b)
}
