package api_test

import (
	"net/http"
	"strings"
	"testing"

	"fieldsync/server/api"
	"fieldsync/server/servertest"
)

// Behind a TLS-terminating proxy the server sees plain HTTP; with
// -trust-proxy the proxy's X-Forwarded-Proto makes the session cookie
// Secure, and without it the header is not believed.
func TestSession_SecureCookieBehindTLSProxy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		trustProxy bool
		proto      string
		secure     bool
	}{
		{"trusted proxy says https", true, "https", true},
		{"trusted proxy says HTTPS in a chain", true, "HTTPS, http", true},
		{"trusted proxy says http", true, "http", false},
		{"trusted proxy, no header", true, "", false},
		{"untrusted header ignored", false, "https", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := servertest.StartWith(t, servertest.Options{API: api.Config{TrustProxy: tc.trustProxy}})
			req, _ := http.NewRequest("POST", env.URL+"/api/v1/auth/login",
				strings.NewReader(`{"username":"admin","password":"`+servertest.AdminPassword+`"}`))
			if tc.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("login: %s", resp.Status)
			}
			var cookie *http.Cookie
			for _, c := range resp.Cookies() {
				if c.Name == api.SessionCookie {
					cookie = c
				}
			}
			if cookie == nil {
				t.Fatal("no session cookie")
			}
			if cookie.Secure != tc.secure {
				t.Fatalf("Secure = %v, want %v", cookie.Secure, tc.secure)
			}
		})
	}
}

func TestSameSecret(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"abc", "abc", true}, {"abc", "abd", false}, {"abc", "ab", false}, {"", "", true}, {"", "x", false},
	} {
		if got := api.SameSecret(tc.a, tc.b); got != tc.want {
			t.Errorf("SameSecret(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}
