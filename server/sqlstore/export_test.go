package sqlstore

import "context"

// Test hooks (this file is compiled only into the package's tests).

// CachedStatements returns how many statements the read and the write
// caches hold (the write count includes those waiting to be prepared).
func (s *Store) CachedStatements() (read, write int) {
	s.rstmts.mu.RLock()
	read = len(s.rstmts.m)
	s.rstmts.mu.RUnlock()
	s.stmts.mu.Lock()
	write = len(s.stmts.m) + len(s.stmts.wanted)
	s.stmts.mu.Unlock()
	return read, write
}

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
