package store

import (
	"fmt"

	"fieldsync/server/domain"
)

// PushDevice is who is pushing: the device and its user.
type PushDevice struct {
	DeviceID string
	UserID   int64
}

// SequenceGapError says which sequence number the server expects next.
type SequenceGapError struct {
	Expected int64
	Got      int64
}

func (e *SequenceGapError) Error() string {
	return fmt.Sprintf("sequence gap: expected seq %d, got %d", e.Expected, e.Got)
}

// Unwrap lets errors.Is(err, domain.ErrSequenceGap) work.
func (e *SequenceGapError) Unwrap() error { return domain.ErrSequenceGap }

// SequenceReusedError says a sequence number the server already applied
// came again with different content (a device restored from a backup, or
// reinstalled with its old token, numbers new mutations from where its
// copy stopped). Nothing of the push is applied; the device renumbers its
// unsent mutations after LastSeq and pushes again.
type SequenceReusedError struct {
	Seq     int64 // the first reused number in the push
	LastSeq int64 // the last sequence number the server applied
}

func (e *SequenceReusedError) Error() string {
	return fmt.Sprintf("序号 %d 已用于另一条内容不同的修改，请从 %d 之后重新编号 (sequence number %d was already applied with different content; last applied seq %d)",
		e.Seq, e.LastSeq, e.Seq, e.LastSeq)
}

// Unwrap lets errors.Is(err, domain.ErrSequenceReused) work.
func (e *SequenceReusedError) Unwrap() error { return domain.ErrSequenceReused }
