package sqlstore

import (
	"context"
	"fmt"
	"time"

	"fieldsync/syncproto"
)

// Test hooks (this file is compiled only into the package's tests).

// HoldRead runs a query on the read pool through the read gate and keeps
// its rows (its connection) until the returned function is called.
func (s *Store) HoldRead(ctx context.Context) (release func(), err error) {
	rows, err := s.readRows(ctx, `SELECT 1`)
	if err != nil {
		return nil, err
	}
	return func() { rows.Close() }, nil
}

// MaxReadStmts is maxReadStmts, for tests.
const MaxReadStmts = maxReadStmts

// SetWriteTimeout changes Config.WriteTimeout. Call it only while no
// write is queued: the writer reads it when it starts a job.
func (s *Store) SetWriteTimeout(d time.Duration) { s.cfg.WriteTimeout = d }

// PreparedPush is a push's work done before it queues (preparePush).
type PreparedPush []*mutationPrep

// PreparePush is preparePush, for benchmarks.
func (s *Store) PreparePush(req *syncproto.PushRequest) PreparedPush { return s.preparePush(req) }

// ApplyPushRolledBack applies a prepared push on the writer's connection
// the way the writer does (a savepoint in a transaction), then rolls the
// transaction back: the writer's work per mutation without the commit.
// Call it only while no write is queued.
func (s *Store) ApplyPushRolledBack(ctx context.Context, dev PushDevice, req *syncproto.PushRequest, pre PreparedPush) (*syncproto.PushResponse, error) {
	defer s.prepareWanted(ctx)
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if err := s.lockWrites(ctx, tx); err != nil {
		return nil, err
	}
	j := &pushJob{ctx: ctx, dev: dev, req: req, pre: pre, done: make(chan struct{})}
	if !s.runJob(tx, 0, j) {
		return nil, fmt.Errorf("savepoint lost: %w", j.err)
	}
	return j.resp, j.err
}
