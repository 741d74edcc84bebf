package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/syncproto"
)

func cli(t *testing.T, dir string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(append([]string{"-dir", dir}, args...), &out, &errb); err != nil {
		t.Fatalf("fieldcli %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func TestFieldcli_EndToEnd(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, syncproto.Household{ID: hh, PlaceCode: "G11", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"王建国"`)}})
	dir := t.TempDir()

	if out := cli(t, dir, "enroll", "-server", env.URL, "-code", env.EnrollCode(t, u.ID), "-name", "t1"); !strings.Contains(out, "user worker1") {
		t.Errorf("enroll: %s", out)
	}
	if out := cli(t, dir, "sync"); !strings.Contains(out, "pulled") {
		t.Errorf("sync: %s", out)
	}
	if out := cli(t, dir, "places"); !strings.Contains(out, "G11\tgroup") {
		t.Errorf("places: %s", out)
	}
	if out := cli(t, dir, "households", "-place", "V1"); !strings.Contains(out, hh) {
		t.Errorf("households: %s", out)
	}
	answers := `{"head_name":"王建国","members_count":4,"poverty_status":"lifted","dibao_class":"none","wubao":"no","pension":"yes","medical_insurance":"yes","income_per_capita":8650.5}`
	if out := cli(t, dir, "visit", "-household", hh, "-form", "household_survey", "-answers", answers, "-lon", "103.15", "-lat", "25.15", "-acc", "8"); !strings.Contains(out, "queued visit") {
		t.Errorf("visit: %s", out)
	}
	// An invalid visit is refused before queuing.
	var out, errb bytes.Buffer
	if err := run([]string{"-dir", dir, "visit", "-household", hh, "-form", "household_survey", "-answers", `{"members_count":"4"}`}, &out, &errb); err == nil {
		t.Errorf("invalid visit accepted: %s", out.String())
	}
	cli(t, dir, "edit", "-household", hh, "-set", "notes=备注", "-set", `phone="138"`)
	// A visit of an unknown form version passes locally and is rejected.
	cli(t, dir, "visit", "-household", hh, "-form", "household_survey", "-version", "7", "-answers", answers)
	if out := cli(t, dir, "pending"); !strings.Contains(out, "pending mutations: 3") {
		t.Errorf("pending: %s", out)
	}
	s := cli(t, dir, "sync")
	if !strings.Contains(s, "pushed 3 mutation(s)") || !strings.Contains(s, "1 rejected") || !strings.Contains(s, "unknown_entity") {
		t.Errorf("sync: %s", s)
	}
	if out := cli(t, dir, "households"); !strings.Contains(out, `"notes":"备注"`) || !strings.Contains(out, `"phone":"138"`) {
		t.Errorf("households after edit: %s", out)
	}
	if out := cli(t, dir, "pending"); !strings.Contains(out, "pending mutations: 0") || !strings.Contains(out, "rejected:          1") {
		t.Errorf("pending after sync: %s", out)
	}
}

// TestDefaultDir: with no -dir the device's data goes to the user's config
// folder (or FIELDSYNC_DEVICE_DIR), never into the working tree.
func TestDefaultDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	t.Setenv("HOME", home)
	t.Setenv("FIELDSYNC_DEVICE_DIR", "")
	if got, want := defaultDir(), filepath.Join(home, "fieldsync", "fieldcli"); got != want {
		t.Fatalf("default dir %q, want %q", got, want)
	}
	t.Setenv("FIELDSYNC_DEVICE_DIR", "/tmp/elsewhere")
	if got := defaultDir(); got != "/tmp/elsewhere" {
		t.Fatalf("FIELDSYNC_DEVICE_DIR ignored: %q", got)
	}
}
