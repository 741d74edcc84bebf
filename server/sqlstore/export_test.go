package sqlstore

import "context"

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
