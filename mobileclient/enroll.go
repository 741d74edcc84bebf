package mobileclient

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"fieldsync/syncproto"
)

// EnrollPath is the enrollment endpoint.
const EnrollPath = "/api/v1/devices/enroll"

type enrollRequest struct {
	Code  string `json:"code"`
	Name  string `json:"name"`
	Token string `json:"token"`
}

type enrollResponse struct {
	DeviceID string `json:"device_id"`
	Token    string `json:"token"`
	User     struct {
		Username string `json:"username"`
	} `json:"user"`
	ProtocolVersion int `json:"protocol_version"`
}

// Enroll trades a one-time enrollment code for a device id and token and
// saves them. A device database enrolls once: its outbox and sequence
// numbers belong to that device id.
func (c *Client) Enroll(ctx context.Context, code, deviceName string) error {
	if err := c.check(); err != nil {
		return err
	}
	if id, _, err := getMeta(ctx, c.db, metaDeviceID); err != nil {
		return fmt.Errorf("enroll: %w", err)
	} else if id != "" {
		return fmt.Errorf("enroll: device %s: %w", id, ErrAlreadyEnrolled)
	}
	if code == "" {
		return fmt.Errorf("enroll: empty code: %w", ErrInvalid)
	}
	token, err := c.enrollToken(ctx, code)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	body, err := encodeBody(enrollRequest{Code: code, Name: deviceName, Token: token}, false)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	var cnt counters
	data, err := c.call(ctx, request{name: "enroll", path: EnrollPath, body: body,
		status: []int{http.StatusCreated, http.StatusOK}}, &cnt)
	if err != nil {
		return err
	}
	var resp enrollResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("enroll: %w: decode answer: %w", ErrServer, err)
	}
	if resp.DeviceID == "" || resp.Token == "" {
		return fmt.Errorf("enroll: %w: answer without device_id or token", ErrServer)
	}
	// A server that ignores the device's token makes one: keep whichever
	// it answered.
	if resp.ProtocolVersion != 0 && !syncproto.SupportsVersion(resp.ProtocolVersion) {
		return fmt.Errorf("enroll: server speaks protocol %d, device %d: %w",
			resp.ProtocolVersion, syncproto.ProtocolVersion, ErrUnsupportedVersion)
	}
	return c.withTx(ctx, func(tx *sql.Tx) error {
		if id, _, err := getMeta(ctx, tx, metaDeviceID); err != nil {
			return err
		} else if id != "" {
			return fmt.Errorf("enroll: device %s: %w", id, ErrAlreadyEnrolled)
		}
		for _, kv := range [][2]string{
			{metaDeviceID, resp.DeviceID},
			{metaToken, resp.Token},
			{metaUsername, resp.User.Username},
			{metaServerURL, c.server},
		} {
			if err := setMeta(ctx, tx, kv[0], kv[1]); err != nil {
				return fmt.Errorf("enroll: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM device_meta WHERE key = ?`, metaEnrollAsk); err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		return nil
	})
}

// enrollToken returns the device token to enroll with: the one saved when
// this code was asked for before (its answer was lost: the server answers
// the same device again), else a new random one, saved before it is sent.
func (c *Client) enrollToken(ctx context.Context, code string) (string, error) {
	key := normalizeCode(code)
	if v, ok, err := getMeta(ctx, c.db, metaEnrollAsk); err != nil {
		return "", err
	} else if ok {
		if k, tok, found := strings.Cut(v, " "); found && k == key && tok != "" {
			return tok, nil
		}
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	if err := setMeta(ctx, c.db, metaEnrollAsk, key+" "+tok); err != nil {
		return "", err
	}
	return tok, nil
}

// normalizeCode keeps an enrollment code's letters and digits, upper
// case, so that the code typed again with other dashes or spaces finds the
// token saved for it.
func normalizeCode(code string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z':
			return r - 'a' + 'A'
		case 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
			return r
		}
		return -1
	}, code)
}
