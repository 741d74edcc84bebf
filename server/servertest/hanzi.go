package servertest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TraditionalOnly returns a function that lists the characters of s that
// exist only in Traditional Chinese (syncproto/testdata/traditional-only.txt,
// made from OpenCC's tables), once each, in order of appearance. Our users
// read Simplified Chinese: tests run what they read through it.
func TraditionalOnly(t testing.TB) func(s string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("servertest: go.mod not found above the test's folder")
		}
		dir = parent
	}
	f, err := os.Open(filepath.Join(dir, "syncproto", "testdata", "traditional-only.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := map[rune]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, r := range line {
			set[r] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(set) < 3000 {
		t.Fatalf("servertest: only %d Traditional-only characters read", len(set))
	}
	return func(s string) string {
		var out []rune
		seen := map[rune]bool{}
		for _, r := range s {
			if set[r] && !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
		return string(out)
	}
}
