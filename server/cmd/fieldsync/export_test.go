package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paulmach/orb/geojson"
	"github.com/xuri/excelize/v2"

	"fieldsync/server/app"
)

// TestExport_CLI loads the demo into a data folder and exports from the
// command line in the three formats, as an admin and as a supervisor.
func TestExport_CLI(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"demo", "-data", dir}, &out, &errb); err != nil {
		t.Fatalf("demo: %v\n%s", err, errb.String())
	}
	count := func(q string) int {
		st, err := app.OpenStore(ctx, app.Config{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var n int
		if err := st.DB().QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	retrofit := count(`SELECT count(*) FROM visits WHERE form_id = 'house_retrofit_inspection'`)
	rework := count(`SELECT count(*) FROM visits WHERE review_state = 'needs_rework'`)
	households := count(`SELECT count(*) FROM households WHERE deleted = 0 AND place_code LIKE '530100101%'`)
	csvPath := filepath.Join(dir, "visits.csv")
	errb.Reset()
	if err := run(ctx, []string{"export", "-data", dir, "-format", "csv", "-what", "visits", "-form", "house_retrofit_inspection", "-out", csvPath}, &out, &errb); err != nil {
		t.Fatalf("export csv: %v\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "100%") || !strings.Contains(errb.String(), fmt.Sprintf("exported %d visits", retrofit)) {
		t.Errorf("progress and summary on stderr: %q", errb.String())
	}
	b, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\xEF\xBB\xBF")) {
		t.Fatal("no BOM")
	}
	recs, err := csv.NewReader(bytes.NewReader(b[3:])).ReadAll()
	if err != nil || len(recs) != retrofit+1 || retrofit == 0 {
		t.Fatalf("csv rows %d %v", len(recs), err)
	}

	xlsxPath := filepath.Join(dir, "households.xlsx")
	if err := run(ctx, []string{"export", "-data", dir, "-format", "xlsx", "-what", "households", "-user", "zhen_supervisor", "-quiet", "-out", xlsxPath}, &out, &errb); err != nil {
		t.Fatalf("export xlsx: %v", err)
	}
	x, err := excelize.OpenFile(xlsxPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := x.GetRows("户")
	x.Close()
	if len(rows) != households+1 {
		t.Errorf("household rows %d", len(rows))
	}

	var gj bytes.Buffer
	if err := run(ctx, []string{"export", "-data", dir, "-format", "geojson", "-what", "visits", "-state", "needs_rework", "-quiet", "-out", "-"}, &gj, &errb); err != nil {
		t.Fatalf("export geojson: %v", err)
	}
	fc, err := geojson.UnmarshalFeatureCollection(gj.Bytes())
	if err != nil || len(fc.Features) != rework {
		t.Fatalf("geojson: %v, %d features", err, len(fc.Features))
	}

	// Bad input is refused before anything is written.
	for _, args := range [][]string{
		{"export", "-data", dir, "-format", "pdf", "-out", "-"},
		{"export", "-data", dir, "-format", "csv"},
		{"export", "-data", dir, "-format", "csv", "-user", "wangge_li", "-out", "-"},
		{"export", "-data", filepath.Join(dir, "missing"), "-format", "csv", "-out", "-"},
	} {
		var o bytes.Buffer
		if err := run(ctx, args, &o, &errb); err == nil || o.Len() > 0 {
			t.Errorf("%v: err %v, %d bytes out", args, err, o.Len())
		}
	}
}
