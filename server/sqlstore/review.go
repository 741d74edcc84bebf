package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

// ReviewResult is store.ReviewResult.
type ReviewResult = store.ReviewResult

// defaultReview applies to forms without review steps: one approval by a
// supervisor (or admin) whose places contain the visit.
var defaultReview = []syncproto.ReviewStep{{Name: "approve", Label: "审核", Roles: []string{"supervisor", "admin"}}}

// ReviewVisit applies a review action by reviewer to a visit.
//
// Review is layered as the visit's form version says (e.g. a village check
// then a township approval): each step names the roles and the place level
// that may do it, and the reviewer must be assigned to a place at that
// level that contains the visit. Approving the last step approves the
// visit; "rework" sends it back with a reason and creates a task that
// reaches the worker's device through the pull; "reject" is final.
func (s *Store) ReviewVisit(ctx context.Context, visitID string, reviewer domain.User, action, reason string) (ReviewResult, error) {
	res := ReviewResult{VisitID: visitID}
	reason = strings.TrimSpace(reason)
	switch action {
	case domain.ReviewApprove:
	case domain.ReviewRework, domain.ReviewReject:
		if reason == "" {
			return res, fmt.Errorf("review: a reason is required to %s: %w", action, domain.ErrInvalid)
		}
	default:
		return res, fmt.Errorf("review: unknown action %q: %w", action, domain.ErrInvalid)
	}
	if len(reason) > 2000 {
		return res, fmt.Errorf("review: reason longer than 2000 bytes: %w", domain.ErrInvalid)
	}
	now := s.ts()
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var place, state, formID, household string
		var formVersion, step int
		var userID sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT place_code, review_state, form_id, form_version, review_step, household_id, user_id FROM visits WHERE id = ?`, visitID).
			Scan(&place, &state, &formID, &formVersion, &step, &household, &userID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("visit %s: %w", visitID, domain.ErrNotFound)
		}
		if err != nil {
			return err
		}
		form, err := s.cachedForm(ctx, tx, formID, formVersion)
		if err != nil {
			return err
		}
		steps := form.Review
		if len(steps) == 0 {
			steps = defaultReview
		}
		res.Steps = len(steps)
		switch {
		case state == domain.StateSubmitted:
		case state == domain.StateNeedsRework && action == domain.ReviewReject:
		default:
			return fmt.Errorf("review: visit is %s; cannot %s: %w", state, action, domain.ErrExists)
		}
		if step >= len(steps) {
			step = len(steps) - 1
		}
		st := steps[step]
		if err := mayReview(ctx, tx, reviewer, st, place); err != nil {
			return err
		}
		before := map[string]any{"state": state, "step": step}
		newState, newStep := state, step
		switch action {
		case domain.ReviewApprove:
			if step+1 < len(steps) {
				newStep = step + 1
			} else {
				newState = domain.StateApproved
			}
		case domain.ReviewRework:
			newState = domain.StateNeedsRework
			res.TaskID = syncproto.NewID(s.now())
			var uid any
			if userID.Valid {
				uid = userID.Int64
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO tasks(id, kind, visit_id, household_id, place_code, user_id, reason, state, created_at, updated_at)
				VALUES (?, 'rework', ?, ?, ?, ?, ?, 'open', ?, ?)`, res.TaskID, visitID, household, place, uid, reason, now, now); err != nil {
				return fmt.Errorf("task: %w", err)
			}
			if _, err := logChange(tx, now, "task", res.TaskID, place, "put"); err != nil {
				return err
			}
		case domain.ReviewReject:
			newState = domain.StateRejected
		}
		if _, err := tx.ExecContext(ctx, `UPDATE visits SET review_state = ?, review_step = ? WHERE id = ?`, newState, newStep, visitID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO review_events(visit_id, step, step_name, action, reason, user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			visitID, step, st.Name, action, reason, reviewer.ID, now); err != nil {
			return err
		}
		if _, err := logChange(tx, now, "visit", visitID, place, "put"); err != nil {
			return err
		}
		res.State, res.Step = newState, newStep
		return audit(ctx, tx, now, "visit.review."+action, "visit", visitID, place, before,
			map[string]any{"state": newState, "step": newStep, "step_name": st.Name, "reason": reason})
	})
	return res, err
}

// mayReview checks that user may do review step st on a visit at place.
func mayReview(ctx context.Context, q querier, u domain.User, st syncproto.ReviewStep, place string) error {
	roleOK := u.Role == domain.RoleAdmin
	for _, r := range st.Roles {
		if r == string(u.Role) {
			roleOK = true
		}
	}
	if !roleOK {
		return fmt.Errorf("review step %q is for %v, not %s: %w", st.Name, st.Roles, u.Role, domain.ErrForbidden)
	}
	if u.Role == domain.RoleAdmin {
		return nil
	}
	var path string
	if err := q.QueryRowContext(ctx, `SELECT path FROM places WHERE code = ?`, place).Scan(&path); err != nil {
		return err
	}
	for _, c := range u.PlaceCodes {
		var level string
		if err := q.QueryRowContext(ctx, `SELECT level FROM places WHERE code = ?`, c).Scan(&level); err != nil {
			continue
		}
		if !strings.Contains(path, "/"+c+"/") {
			continue
		}
		if st.Level == "" || st.Level == level {
			return nil
		}
	}
	if st.Level != "" {
		return fmt.Errorf("review step %q needs a reviewer assigned at %s level over this visit: %w", st.Name, st.Level, domain.ErrForbidden)
	}
	return fmt.Errorf("visit is outside the reviewer's places: %w", domain.ErrForbidden)
}

// VisitFilter is store.VisitFilter.
type VisitFilter = store.VisitFilter

// VisitRow is store.VisitRow.
type VisitRow = store.VisitRow

// Visits lists visits matching f, newest first (then by id).
func (s *Store) Visits(ctx context.Context, f VisitFilter) ([]VisitRow, error) {
	q := `SELECT v.id, v.review_step, COALESCE((h.fields ->> 'head_name'), ''), p.name,
		(SELECT count(*) FROM evidence_flags ef WHERE ef.visit_id = v.id)
		FROM visits v JOIN households h ON h.id = v.household_id JOIN places p ON p.code = v.place_code WHERE 1=1`
	var args []any
	if f.FormID != "" {
		q += ` AND v.form_id = ?`
		args = append(args, f.FormID)
	}
	if f.State != "" {
		q += ` AND v.review_state = ?`
		args = append(args, f.State)
	}
	if f.From != "" {
		q += ` AND v.server_time >= ?`
		args = append(args, f.From)
	}
	if f.To != "" {
		q += ` AND v.server_time < ?`
		args = append(args, f.To)
	}
	if f.Flag != "" {
		q += ` AND EXISTS (SELECT 1 FROM evidence_flags ef WHERE ef.visit_id = v.id AND ef.flag = ?)`
		args = append(args, f.Flag)
	}
	if f.Places != nil {
		codes := sortedKeys(f.Places)
		if len(codes) == 0 {
			return []VisitRow{}, nil
		}
		q += ` AND v.place_code IN (SELECT value FROM json_each(?))`
		args = append(args, jsonList(codes))
	}
	limit := f.Limit
	if limit <= 0 || limit > 5000 {
		limit = 500
	}
	q += ` ORDER BY v.server_time DESC, v.id LIMIT ? OFFSET ?`
	args = append(args, limit, max(f.Offset, 0))
	rows, err := s.readRows(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("visits: %w", err)
	}
	type head struct {
		id, name, place string
		step, flags     int
	}
	var hs []head
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.id, &h.step, &h.name, &h.place, &h.flags); err != nil {
			rows.Close()
			return nil, err
		}
		hs = append(hs, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("visits: %w", err)
	}
	out := make([]VisitRow, 0, len(hs))
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		for _, h := range hs {
			v, err := loadVisit(ctx, tx, h.id)
			if err != nil {
				return err
			}
			out = append(out, VisitRow{Visit: *v, HeadName: h.name, PlaceName: h.place, ReviewStep: h.step, Flags: h.flags})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("visits: %w", err)
	}
	return out, nil
}

// ReviewHistory lists the review events of a visit.
func (s *Store) ReviewHistory(ctx context.Context, visitID string) ([]map[string]any, error) {
	rows, err := s.readRows(ctx, `SELECT r.step, r.step_name, r.action, r.reason, COALESCE(u.username, ''), r.created_at
		FROM review_events r LEFT JOIN users u ON u.id = r.user_id WHERE r.visit_id = ? ORDER BY r.id`, visitID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []map[string]any{}
	for rows.Next() {
		var step int
		var name, action, reason, user, at string
		if err := rows.Scan(&step, &name, &action, &reason, &user, &at); err != nil {
			return nil, err
		}
		out = append(out, map[string]any{"step": step, "step_name": name, "action": action, "reason": reason, "user": user, "at": at})
	}
	return out, rows.Err()
}
