package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"fieldsync/server/domain"
)

// execer is a transaction or a connection.
type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// audit appends one audit event inside the caller's transaction. before and
// after are marshalled to JSON (nil stays NULL). The actor comes from ctx.
func audit(ctx context.Context, tx execer, now, action, entityType, entityID, place string, before, after any) error {
	a := domain.ActorFrom(ctx)
	enc := func(v any) any {
		if v == nil {
			return nil
		}
		if raw, ok := v.(json.RawMessage); ok {
			if len(raw) == 0 {
				return nil
			}
			return string(raw)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		return string(b)
	}
	var user any
	if a.UserID > 0 {
		user = a.UserID
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO audit_events(at, actor_user, actor_name, device_id, session, action, entity_type, entity_id, place_code, before, after)
		VALUES (?, ?, COALESCE(NULLIF(?, ''), (SELECT username FROM users WHERE id = ?), ''), ?, ?, ?, ?, ?, ?, ?, ?)`,
		now, user, a.Name, a.UserID, a.DeviceID, a.Session, action, entityType, entityID, place, enc(before), enc(after))
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// auditRow is one audit event waiting to be written by auditRows.
type auditRow struct {
	at, action, entityType, entityID, place string
	after                                   json.RawMessage
}

// auditRowsChunk bounds the rows of one auditRows statement (and so the
// statement texts the writer's cache sees).
const auditRowsChunk = 20

// auditRows appends audit events, in order, with one statement per
// auditRowsChunk rows; each is written as audit would write it (no
// "before", the actor from ctx).
func auditRows(ctx context.Context, tx execer, rows []auditRow) error {
	a := domain.ActorFrom(ctx)
	var user any
	if a.UserID > 0 {
		user = a.UserID
	}
	for len(rows) > 0 {
		n := min(len(rows), auditRowsChunk)
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_events(at, actor_user, actor_name, device_id, session, action, entity_type, entity_id, place_code, before, after) VALUES `)
		args := make([]any, 0, 11*n)
		for i, r := range rows[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString(`(?, ?, COALESCE(NULLIF(?, ''), (SELECT username FROM users WHERE id = ?), ''), ?, ?, ?, ?, ?, ?, ?, ?)`)
			var after any
			if len(r.after) > 0 {
				after = string(r.after)
			}
			args = append(args, r.at, user, a.Name, a.UserID, a.DeviceID, a.Session, r.action, r.entityType, r.entityID, r.place, nil, after)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("audit %s: %w", rows[0].action, err)
		}
		rows = rows[n:]
	}
	return nil
}

// Audit records an event that is not itself a store change, such as an
// export.
func (s *Store) Audit(ctx context.Context, action, entityType, entityID, place string, details any) error {
	return audit(ctx, s.w, s.ts(), action, entityType, entityID, place, nil, details)
}

// AuditTrail lists the audit events of one entity, oldest first. For a
// household it includes the events of its visits and conflicts.
func (s *Store) AuditTrail(ctx context.Context, entityType, id string) ([]domain.AuditEvent, error) {
	q := `SELECT id, at, COALESCE(actor_user, 0), actor_name, device_id, session, action, entity_type, entity_id, place_code, before, after
		FROM audit_events WHERE entity_type = ? AND entity_id = ?`
	args := []any{entityType, id}
	if entityType == "household" {
		q += ` OR (entity_type = 'visit' AND entity_id IN (SELECT id FROM visits WHERE household_id = ?))
			OR (entity_type = 'conflict' AND entity_id IN (SELECT id FROM conflicts WHERE household_id = ?))`
		args = append(args, id, id)
	}
	rows, err := s.readRows(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("audit trail: %w", err)
	}
	defer rows.Close()
	out := []domain.AuditEvent{}
	for rows.Next() {
		var e domain.AuditEvent
		var at string
		var before, after sql.NullString
		if err := rows.Scan(&e.ID, &at, &e.ActorUser, &e.ActorName, &e.DeviceID, &e.Session, &e.Action, &e.EntityType, &e.EntityID, &e.PlaceCode, &before, &after); err != nil {
			return nil, err
		}
		e.At = domain.ParseTimestamp(at)
		if before.Valid {
			e.Before = json.RawMessage(before.String)
		}
		if after.Valid {
			e.After = json.RawMessage(after.String)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
