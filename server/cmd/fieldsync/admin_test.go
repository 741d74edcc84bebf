package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"fieldsync/server/app"
	"fieldsync/server/auth"
	"fieldsync/server/domain"
)

func TestAdmin_UsersAndResetPassword(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"demo", "-data", dir}, &out, &errb); err != nil {
		t.Fatalf("demo: %v\n%s", err, errb.String())
	}
	admin := func(stdinText string, args ...string) (string, error) {
		t.Helper()
		stdin = strings.NewReader(stdinText)
		t.Cleanup(func() { stdin = nil })
		var o, e bytes.Buffer
		err := run(ctx, append([]string{"admin"}, args...), &o, &e)
		return o.String(), err
	}
	login := func(user, pw string) error {
		t.Helper()
		st, err := app.OpenStore(ctx, app.Config{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		u, err := st.UserByName(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return auth.CheckPassword(u.PasswordHash, pw)
	}

	t.Run("users lists every demo account with role and places", func(t *testing.T) {
		got, err := admin("", "users", "-data", dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"admin", "zhen_supervisor", "cun_supervisor", "wangge_li", "wangge_zhao", "管理员", "督导", "网格员"} {
			if !strings.Contains(got, want) {
				t.Errorf("users output lacks %q:\n%s", want, got)
			}
		}
	})
	t.Run("reset-password prints a new password that works", func(t *testing.T) {
		got, err := admin("", "reset-password", "-data", dir, "wangge_li")
		if err != nil {
			t.Fatal(err)
		}
		_, pw, ok := strings.Cut(strings.TrimSpace(got), "：")
		if !ok || len(pw) < 12 {
			t.Fatalf("no password printed: %q", got)
		}
		if err := login("wangge_li", pw); err != nil {
			t.Fatalf("new password refused: %v", err)
		}
		if err := login("wangge_li", "demo-1234"); !errors.Is(err, auth.ErrWrongPassword) {
			t.Fatalf("old password still works: %v", err)
		}
	})
	t.Run("reset-password -stdin takes the given password", func(t *testing.T) {
		if _, err := admin("xin-mima-2026\n", "reset-password", "-data", dir, "-stdin", "wangge_zhao"); err != nil {
			t.Fatal(err)
		}
		if err := login("wangge_zhao", "xin-mima-2026"); err != nil {
			t.Fatalf("given password refused: %v", err)
		}
	})
	t.Run("weak password from stdin refused and nothing changes", func(t *testing.T) {
		if _, err := admin("short\n", "reset-password", "-data", dir, "-stdin", "cun_supervisor"); !errors.Is(err, auth.ErrWeakPassword) {
			t.Fatalf("weak password: %v", err)
		}
		if err := login("cun_supervisor", "demo-1234"); err != nil {
			t.Fatalf("password changed by a refused reset: %v", err)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		if _, err := admin("", "reset-password", "-data", dir, "nobody"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
	})
	t.Run("bad usage", func(t *testing.T) {
		for _, args := range [][]string{{}, {"frobnicate"}, {"reset-password", "-data", dir}, {"users", "extra"}} {
			if _, err := admin("", args...); err == nil {
				t.Errorf("admin %v: no error", args)
			}
		}
	})
}
