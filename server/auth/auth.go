// Package auth makes and checks the secrets fieldsync hands out: password
// hashes (bcrypt), random bearer tokens stored only as SHA-256 hashes, and
// short one-time enrollment codes.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Errors.
var (
	ErrWrongPassword = errors.New("wrong username or password")
	ErrWeakPassword  = errors.New("password must be at least 8 characters")
)

// HashPassword returns a bcrypt hash of pw.
func HashPassword(pw string) (string, error) {
	if len(pw) < 8 {
		return "", ErrWeakPassword
	}
	if len(pw) > 72 {
		return "", fmt.Errorf("password longer than 72 bytes: %w", ErrWeakPassword)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), PasswordCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// PasswordCost is the bcrypt cost of every stored password hash.
const PasswordCost = bcrypt.DefaultCost

// dummyHash is compared against when the user does not exist, so that a
// login takes as long for unknown users as for known ones: it has the
// same cost as the real hashes (a cheaper one answered unknown users in a
// fraction of the time, which tells an attacker which names exist). Made
// on first use, not at start-up.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not-a-real-password"), PasswordCost)
	return h
})

// CheckPassword compares pw with hash; an empty hash never matches.
func CheckPassword(hash, pw string) error {
	if hash == "" {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(pw))
		return ErrWrongPassword
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) != nil {
		return ErrWrongPassword
	}
	return nil
}

// NewToken returns a random 256-bit bearer token, base64url.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is how tokens, session ids and codes are stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// codeAlphabet has no 0/O or 1/I/L, so codes read aloud or typed from a
// screen survive.
const codeAlphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

// NewEnrollmentCode returns a short code like "K7QX-M2PD-9RTA" (about 59
// bits). Codes are single use and short-lived, and enrollment attempts are
// rate limited.
func NewEnrollmentCode() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	var sb strings.Builder
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(codeAlphabet[int(c)%len(codeAlphabet)])
	}
	return sb.String()
}

// NormalizeCode upper-cases a typed code and drops spaces and dashes, so
// "k7qx m2pd 9rta" matches.
func NormalizeCode(code string) string {
	var sb strings.Builder
	for _, r := range strings.ToUpper(code) {
		if r == '-' || r == ' ' {
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// EnrollmentPayload is the string shown as a QR code: the field app's URL
// on the server with the code, "<server>/app/#/enroll?code=<code>". The
// app scans it (or a phone's camera opens it) and has both the server and
// the code; opening it enrolls.
func EnrollmentPayload(serverURL, code string) string {
	return strings.TrimRight(serverURL, "/") + "/app/#/enroll?code=" + urlEscape(code)
}

func urlEscape(s string) string { return url.QueryEscape(s) }
