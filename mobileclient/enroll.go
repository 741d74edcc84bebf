package mobileclient

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"

	"fieldsync/syncproto"
)

// EnrollPath is the enrollment endpoint.
const EnrollPath = "/api/v1/devices/enroll"

type enrollRequest struct {
	Code string `json:"code"`
	Name string `json:"name"`
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
	body, err := encodeBody(enrollRequest{Code: code, Name: deviceName}, false)
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
		return nil
	})
}
