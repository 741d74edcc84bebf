package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/jpeg"
	"os"
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
	cli(t, dir, "visit", "-household", hh, "-form", "household_survey", "-version", "7", "-answers", answers, "-lon", "103.15", "-lat", "25.15")
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

// TestFieldcli_GPSWarning: a visit without a point, or beyond the form's
// accuracy limit (household_survey: 50 m), is not recorded: fieldcli
// prints the warning in Chinese and fails; with -gps-reason it is queued
// and the server keeps the reason.
func TestFieldcli_GPSWarning(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, syncproto.Household{ID: hh, PlaceCode: "G11", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"王建国"`)}})
	dir := t.TempDir()
	cli(t, dir, "enroll", "-server", env.URL, "-code", env.EnrollCode(t, u.ID), "-name", "t1")
	cli(t, dir, "sync")
	answers := strings.TrimSpace(cli(t, dir, "forms", "-template", "household_survey"))
	base := []string{"-dir", dir, "visit", "-household", hh, "-form", "household_survey", "-answers", answers}
	for _, extra := range [][]string{{}, {"-lon", "103.15", "-lat", "25.15", "-acc", "80"}} {
		var out, errb bytes.Buffer
		err := run(append(append([]string{}, base...), extra...), &out, &errb)
		if err == nil || !strings.Contains(errb.String(), "警告") || !strings.Contains(errb.String(), "-gps-reason") {
			t.Errorf("%v: err %v, stderr %q", extra, err, errb.String())
		}
	}
	if out := cli(t, dir, "pending"); !strings.Contains(out, "pending mutations: 0") {
		t.Fatalf("a warned visit was queued: %s", out)
	}
	id := strings.TrimSpace(cli(t, dir, append(base[2:], "-q", "-gps-reason", "山谷里没有信号")...))
	cli(t, dir, append(base[2:], "-lon", "103.15", "-lat", "25.15", "-acc", "80", "-accept-no-gps")...)
	if s := cli(t, dir, "sync"); !strings.Contains(s, "pushed 2 mutation(s)") {
		t.Fatalf("sync: %s", s)
	}
	var reason string
	if err := env.Store.DB().QueryRow(`SELECT gps_reason FROM visits WHERE id = ?`, id).Scan(&reason); err != nil || reason != "山谷里没有信号" {
		t.Errorf("server keeps reason %q (%v)", reason, err)
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

// TestFieldcli_TemplatePhotoTasks: forms lists the forms, forms -template
// gives answers a visit accepts, photo attaches a JPEG that the next sync
// uploads, and tasks lists nothing on a device without rework.
func TestFieldcli_TemplatePhotoTasks(t *testing.T) {
	env := servertest.Start(t)
	u := env.CreateUser(t, "worker1", domain.RoleFieldWorker, "V1")
	hh := syncproto.NewID(time.Now())
	env.AddHouseholds(t, syncproto.Household{ID: hh, PlaceCode: "G11", Fields: map[string]json.RawMessage{"head_name": json.RawMessage(`"王建国"`)}})
	dir := t.TempDir()
	cli(t, dir, "enroll", "-server", env.URL, "-code", env.EnrollCode(t, u.ID), "-name", "t1")
	cli(t, dir, "sync")

	if out := cli(t, dir, "forms"); !strings.Contains(out, "water_cellar_progress\tv1\t水窖建设进度\n") {
		t.Errorf("forms: %q", out)
	}
	answers := strings.TrimSpace(cli(t, dir, "forms", "-template", "water_cellar_progress"))
	if strings.Contains(answers, "\n") || !json.Valid([]byte(answers)) {
		t.Fatalf("template is not one line of JSON: %q", answers)
	}
	id := strings.TrimSpace(cli(t, dir, "visit", "-q", "-household", hh, "-form", "water_cellar_progress", "-answers", answers, "-lon", "103.15", "-lat", "25.15", "-acc", "8"))
	if len(id) != len(hh) || strings.ContainsAny(id, " \n") {
		t.Fatalf("visit -q printed %q, want the id alone", id)
	}

	photo := filepath.Join(t.TempDir(), "progress.jpg")
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, img, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(photo, jb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out := cli(t, dir, "photo", "-visit", id, "-slot", "progress", "-file", photo, "-type", "image/jpeg")
	sum, _, _ := strings.Cut(strings.TrimPrefix(out, "queued "), " ")
	if len(sum) != 64 {
		t.Fatalf("photo: %q", out)
	}
	// A slot the form does not have is refused.
	var o, e bytes.Buffer
	if err := run([]string{"-dir", dir, "photo", "-visit", id, "-slot", "nope", "-file", photo}, &o, &e); err == nil {
		t.Errorf("photo into an unknown slot accepted: %s", o.String())
	}
	if s := cli(t, dir, "sync"); !strings.Contains(s, "0 rejected") {
		t.Errorf("sync: %s", s)
	}
	ctx := context.Background()
	v, err := env.Store.Visit(ctx, id)
	if err != nil {
		t.Fatalf("visit on the server: %v", err)
	}
	if len(v.Evidence) != 1 || v.Evidence[0].SHA256 != sum || v.Evidence[0].Slot != "progress" {
		t.Errorf("server visit evidence: %+v", v.Evidence)
	}
	if ok, err := env.Store.BlobPresent(ctx, sum); err != nil || !ok {
		t.Errorf("photo not uploaded: present=%v err=%v", ok, err)
	}
	if out := cli(t, dir, "tasks"); out != "" {
		t.Errorf("tasks: %q", out)
	}
}

// TestAnswersTemplate_Templates: the template of every built-in form
// passes its validation and fills every required field.
func TestAnswersTemplate_Templates(t *testing.T) {
	for _, f := range syncproto.Templates() {
		t.Run(f.ID, func(t *testing.T) {
			b, err := answersTemplate(f, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]json.RawMessage
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for _, fd := range f.Fields {
				if _, ok := got[fd.Name]; ok != fd.Required {
					t.Errorf("field %s (required %v) in template: %v", fd.Name, fd.Required, ok)
				}
			}
		})
	}
}

// TestAnswersTemplate_Bounds: values respect each type's bounds.
func TestAnswersTemplate_Bounds(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	choices := []syncproto.Choice{{Value: "a", Label: "甲"}, {Value: "b", Label: "乙"}, {Value: "c", Label: "丙"}}
	form := syncproto.FormDef{ID: "t", Version: 1, Title: "测试", Fields: []syncproto.Field{
		{Name: "long_text", Type: syncproto.FieldText, Label: "户主", Required: true, Min: f(9), Max: f(10)},
		{Name: "short_text", Type: syncproto.FieldText, Label: "很长很长的标签文字", Required: true, Max: f(3)},
		{Name: "int_high", Type: syncproto.FieldInteger, Label: "人数", Required: true, Min: f(5), Max: f(9)},
		{Name: "int_neg", Type: syncproto.FieldInteger, Label: "差值", Required: true, Min: f(-9), Max: f(-2)},
		{Name: "dec", Type: syncproto.FieldDecimal, Label: "面积", Required: true, Min: f(2.5)},
		{Name: "many", Type: syncproto.FieldSelectMany, Label: "多选", Required: true, Min: f(2), Choices: choices},
		{Name: "when", Type: syncproto.FieldDate, Label: "日期", Required: true},
		{Name: "where", Type: syncproto.FieldGeopoint, Label: "位置", Required: true},
		{Name: "pic", Type: syncproto.FieldPhoto, Label: "照片", Required: true},
		{Name: "opt", Type: syncproto.FieldText, Label: "备注"},
	}}
	b, err := answersTemplate(form, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"int_high":5`, `"int_neg":-9`, `"dec":2.5`, `"many":["a","b"]`, `"when":"2026-03-01"`, `"short_text":"示例很"`} {
		if !strings.Contains(s, want) {
			t.Errorf("template %s lacks %s", s, want)
		}
	}
	if strings.Contains(s, `"opt"`) {
		t.Errorf("optional field in template: %s", s)
	}
	// A field no value can satisfy is reported, not papered over.
	form.Fields = []syncproto.Field{{Name: "n", Type: syncproto.FieldInteger, Label: "数", Required: true, Min: f(1.2), Max: f(1.8)}}
	if _, err := answersTemplate(form, time.Now()); err == nil {
		t.Error("impossible integer field: no error")
	}
}
