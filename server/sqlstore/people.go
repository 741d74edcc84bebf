package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"fieldsync/server/domain"
)

// CreateUser adds a user with the given password hash and places.
func (s *Store) CreateUser(ctx context.Context, u domain.User) (domain.User, error) {
	if !u.Role.Valid() {
		return u, fmt.Errorf("user role %q: %w", u.Role, domain.ErrInvalid)
	}
	if len(u.Username) < 1 || len(u.Username) > 64 || strings.ContainsAny(u.Username, " \t\r\n/\\") {
		return u, fmt.Errorf("username %q: %w", u.Username, domain.ErrInvalid)
	}
	now := s.now()
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO users(username, display_name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			u.Username, u.DisplayName, string(u.Role), u.PasswordHash, domain.Timestamp(now), domain.Timestamp(now)).Scan(&u.ID)
		if err != nil {
			if isUniqueErr(err) {
				return fmt.Errorf("user %s: %w", u.Username, domain.ErrExists)
			}
			return err
		}
		if err := setUserPlaces(ctx, tx, u.ID, u.PlaceCodes); err != nil {
			return err
		}
		return audit(ctx, tx, domain.Timestamp(now), "user.create", "user", fmt.Sprint(u.ID), "", nil,
			map[string]any{"username": u.Username, "role": u.Role, "place_codes": u.PlaceCodes})
	})
	u.CreatedAt = now
	return u, err
}

func setUserPlaces(ctx context.Context, tx *sql.Tx, userID int64, codes []string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_places WHERE user_id = ?`, userID); err != nil {
		return err
	}
	for _, c := range codes {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM places WHERE code = ?`, c).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("place %s: %w", c, domain.ErrNotFound)
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_places(user_id, place_code) VALUES (?, ?) ON CONFLICT DO NOTHING`, userID, c); err != nil {
			return err
		}
	}
	return nil
}

// SetUserPlaces replaces a user's assigned places.
func (s *Store) SetUserPlaces(ctx context.Context, userID int64, codes []string) error {
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE id = ?`, userID).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("user %d: %w", userID, domain.ErrNotFound)
			}
			return err
		}
		before, err := userPlaces(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := setUserPlaces(ctx, tx, userID, codes); err != nil {
			return err
		}
		now := s.ts()
		if _, err := tx.ExecContext(ctx, `UPDATE users SET updated_at = ? WHERE id = ?`, now, userID); err != nil {
			return err
		}
		return audit(ctx, tx, now, "user.places", "user", fmt.Sprint(userID), "", map[string]any{"place_codes": before}, map[string]any{"place_codes": codes})
	})
}

// SetPassword replaces a user's password hash.
func (s *Store) SetPassword(ctx context.Context, userID int64, hash string) error {
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := s.ts()
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?`, hash, now, userID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("user %d: %w", userID, domain.ErrNotFound)
		}
		return audit(ctx, tx, now, "user.password", "user", fmt.Sprint(userID), "", nil, nil)
	})
}

const userCols = `id, username, display_name, role, password_hash, disabled, created_at`

func (s *Store) scanUsers(ctx context.Context, q querier, query string, args ...any) ([]domain.User, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	var out []domain.User
	for rows.Next() {
		var u domain.User
		var role, created string
		if err := rows.Scan(&u.ID, &u.Username, &u.DisplayName, &role, &u.PasswordHash, &u.Disabled, &created); err != nil {
			rows.Close()
			return nil, err
		}
		u.Role = domain.Role(role)
		u.CreatedAt = domain.ParseTimestamp(created)
		out = append(out, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		pl, err := userPlaces(ctx, q, out[i].ID)
		if err != nil {
			return nil, err
		}
		out[i].PlaceCodes = pl
	}
	return out, nil
}

func userPlaces(ctx context.Context, q querier, userID int64) ([]string, error) {
	return queryStrings(ctx, q, `SELECT place_code FROM user_places WHERE user_id = ? ORDER BY place_code`, userID)
}

func (s *Store) oneUser(ctx context.Context, where string, arg any) (domain.User, error) {
	var us []domain.User
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		us, err = s.scanUsers(ctx, tx, `SELECT `+userCols+` FROM users WHERE `+where, arg)
		return err
	})
	if err != nil {
		return domain.User{}, err
	}
	if len(us) == 0 {
		return domain.User{}, fmt.Errorf("user %v: %w", arg, domain.ErrNotFound)
	}
	return us[0], nil
}

// User returns a user by id.
func (s *Store) User(ctx context.Context, id int64) (domain.User, error) {
	return s.oneUser(ctx, `id = ?`, id)
}

// UserByName returns a user by username.
func (s *Store) UserByName(ctx context.Context, name string) (domain.User, error) {
	return s.oneUser(ctx, `username = ?`, name)
}

// Users lists all users.
func (s *Store) Users(ctx context.Context) ([]domain.User, error) {
	var us []domain.User
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		us, err = s.scanUsers(ctx, tx, `SELECT `+userCols+` FROM users ORDER BY username`)
		return err
	})
	return us, err
}

// CreateSession stores a session under the hash of its token.
func (s *Store) CreateSession(ctx context.Context, tokenHash string, sess domain.Session) error {
	_, err := s.writeExec(ctx, `INSERT INTO sessions(token_hash, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		tokenHash, sess.UserID, sess.CSRFToken, s.ts(), domain.Timestamp(sess.ExpiresAt))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	return nil
}

// Session returns a live session by token hash: ErrNotFound, ErrRevoked or
// ErrExpired otherwise.
func (s *Store) Session(ctx context.Context, tokenHash string) (domain.Session, error) {
	var sess domain.Session
	var expires string
	var revoked sql.NullString
	err := s.readRow(ctx, `SELECT user_id, csrf_token, expires_at, revoked_at FROM sessions WHERE token_hash = ?`, tokenHash).
		Scan(&sess.UserID, &sess.CSRFToken, &expires, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return sess, fmt.Errorf("session: %w", domain.ErrNotFound)
	}
	if err != nil {
		return sess, fmt.Errorf("session: %w", err)
	}
	sess.ExpiresAt = domain.ParseTimestamp(expires)
	if revoked.Valid {
		return sess, fmt.Errorf("session: %w", domain.ErrRevoked)
	}
	if !s.now().Before(sess.ExpiresAt) {
		return sess, fmt.Errorf("session: %w", domain.ErrExpired)
	}
	return sess, nil
}

// RevokeSession ends a session.
func (s *Store) RevokeSession(ctx context.Context, tokenHash string) error {
	_, err := s.writeExec(ctx, `UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL`, s.ts(), tokenHash)
	return err
}

// CreateEnrollmentCode stores a one-time enrollment code's hash.
func (s *Store) CreateEnrollmentCode(ctx context.Context, codeHash string, userID, createdBy int64, expires time.Time) error {
	var by any
	if createdBy > 0 {
		by = createdBy
	}
	_, err := s.writeExec(ctx, `INSERT INTO enrollment_codes(code_hash, user_id, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		codeHash, userID, by, s.ts(), domain.Timestamp(expires))
	if err != nil {
		return fmt.Errorf("enrollment code: %w", err)
	}
	return nil
}

// Enroll redeems an enrollment code for a new device, in one transaction:
// the code is marked used and the device stored with its token hash.
func (s *Store) Enroll(ctx context.Context, codeHash string, dev domain.Device, tokenHash string) (domain.Device, error) {
	now := s.now()
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var userID int64
		var expires string
		var used, usedBy sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT user_id, expires_at, used_at, device_id FROM enrollment_codes WHERE code_hash = ?`, codeHash).
			Scan(&userID, &expires, &used, &usedBy)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("enrollment code: %w", domain.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var disabled bool
		if err := tx.QueryRowContext(ctx, `SELECT disabled FROM users WHERE id = ?`, userID).Scan(&disabled); err != nil {
			return err
		}
		if used.Valid {
			// The same device again (it holds the token the code was
			// redeemed with): its answer was lost on the way back.
			again, err := s.enrolledWith(ctx, tx, usedBy.String, tokenHash)
			if err != nil {
				return err
			}
			if again.ID == "" {
				return fmt.Errorf("enrollment code: %w", domain.ErrUsed)
			}
			if disabled {
				return fmt.Errorf("enrollment: user disabled: %w", domain.ErrForbidden)
			}
			dev = again
			return nil
		}
		if !now.Before(domain.ParseTimestamp(expires)) {
			return fmt.Errorf("enrollment code: %w", domain.ErrExpired)
		}
		if disabled {
			return fmt.Errorf("enrollment: user disabled: %w", domain.ErrForbidden)
		}
		dev.UserID = userID
		dev.CreatedAt = now
		if _, err := tx.ExecContext(ctx, `UPDATE enrollment_codes SET used_at = ?, device_id = ? WHERE code_hash = ?`, domain.Timestamp(now), dev.ID, codeHash); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices(id, user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
			dev.ID, userID, dev.Name, tokenHash, domain.Timestamp(now)); err != nil {
			if isUniqueErr(err) {
				// A token another device holds (a device chooses its own).
				return fmt.Errorf("device token in use: %w", domain.ErrExists)
			}
			return fmt.Errorf("device: %w", err)
		}
		if _, err = tx.ExecContext(ctx, `INSERT INTO device_sync(device_id) VALUES (?)`, dev.ID); err != nil {
			return err
		}
		actx := ctx
		if domain.ActorFrom(ctx) == (domain.Actor{}) {
			// Enrollment is unauthenticated: the actor is the device itself,
			// on behalf of the user whose code it redeemed.
			actx = domain.WithActor(ctx, domain.Actor{UserID: userID, DeviceID: dev.ID})
		}
		return audit(actx, tx, domain.Timestamp(now), "device.enroll", "device", dev.ID, "", nil, map[string]any{"user_id": userID, "name": dev.Name})
	})
	return dev, err
}

// enrolledWith returns device id if it is live and its token hash is
// tokenHash, else a zero Device.
func (s *Store) enrolledWith(ctx context.Context, tx *sql.Tx, id, tokenHash string) (domain.Device, error) {
	var d domain.Device
	var created string
	err := tx.QueryRowContext(ctx, `SELECT id, user_id, name, created_at FROM devices
		WHERE id = ? AND token_hash = ? AND revoked_at IS NULL`, id, tokenHash).Scan(&d.ID, &d.UserID, &d.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Device{}, nil
	}
	if err != nil {
		return domain.Device{}, fmt.Errorf("enrolled device: %w", err)
	}
	d.CreatedAt = domain.ParseTimestamp(created)
	return d, nil
}

// DeviceByToken returns the live device holding a token hash, with its
// user. A revoked device is ErrRevoked.
func (s *Store) DeviceByToken(ctx context.Context, tokenHash string) (domain.Device, error) {
	var d domain.Device
	var created string
	var revoked sql.NullString
	err := s.readRow(ctx, `SELECT id, user_id, name, created_at, revoked_at FROM devices WHERE token_hash = ?`, tokenHash).
		Scan(&d.ID, &d.UserID, &d.Name, &created, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device: %w", domain.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("device: %w", err)
	}
	d.CreatedAt = domain.ParseTimestamp(created)
	if revoked.Valid {
		return d, fmt.Errorf("device %s: %w", d.ID, domain.ErrRevoked)
	}
	return d, nil
}

// RevokeDevice revokes a device's token; its next request gets 401.
func (s *Store) RevokeDevice(ctx context.Context, id string) error {
	return s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := s.ts()
		res, err := tx.ExecContext(ctx, `UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, now, id)
		if err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("device %s: %w", id, domain.ErrNotFound)
		}
		return audit(ctx, tx, now, "device.revoke", "device", id, "", nil, nil)
	})
}

// Devices lists devices with their sync state. userIDs, when non-nil,
// limits the listing to those users' devices.
func (s *Store) Devices(ctx context.Context, userIDs []int64) ([]domain.Device, error) {
	rows, err := s.readRows(ctx, `SELECT d.id, d.user_id, u.username, d.name, d.created_at, d.revoked_at, d.last_seen_at,
			COALESCE(ds.last_seq, 0), ds.last_sync_ok_at, COALESCE(ds.app_version, ''), COALESCE(ds.health, '')
		FROM devices d JOIN users u ON u.id = d.user_id LEFT JOIN device_sync ds ON ds.device_id = d.id ORDER BY u.username, d.created_at`)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	defer rows.Close()
	want := map[int64]bool{}
	for _, id := range userIDs {
		want[id] = true
	}
	var out []domain.Device
	for rows.Next() {
		var d domain.Device
		var created string
		var revoked, seen, syncOK sql.NullString
		var health string
		if err := rows.Scan(&d.ID, &d.UserID, &d.Username, &d.Name, &created, &revoked, &seen, &d.LastSeq, &syncOK, &d.AppVersion, &health); err != nil {
			return nil, err
		}
		if userIDs != nil && !want[d.UserID] {
			continue
		}
		d.CreatedAt = domain.ParseTimestamp(created)
		d.RevokedAt = nullTime(revoked)
		d.LastSeenAt = nullTime(seen)
		d.LastSyncOKAt = nullTime(syncOK)
		if health != "" {
			d.Health = []byte(health)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func nullTime(s sql.NullString) *time.Time {
	if !s.Valid {
		return nil
	}
	t := domain.ParseTimestamp(s.String)
	return &t
}

// sortedKeys returns the keys of a set in order.
func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
