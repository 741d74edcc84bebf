package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The simulator drives the fieldsync server only from outside: it builds
// the binary (server/cmd/fieldsync) from this checkout once per process,
// prepares data folders with `fieldsync seed`, runs `fieldsync run` as a
// subprocess, and talks to it over HTTP. It reads a stopped or running
// server's SQLite file read-only with plain SQL to check what arrived.
// Nothing here imports the server's packages.

// The demo county's codes and password (server/demo). `fieldsync seed`
// reports them in its manifest, and seedData checks that they still
// agree.
const (
	demoVillageCode      = "530100101201" // 石门村委会, the village with the demo's households
	demoOtherVillageCode = "530100102201" // 龙潭村委会, a village the demo leaves empty
	demoAdmin            = "admin"
	demoPassword         = "demo-1234"
	// serverDBFile is the SQLite file's name in a data folder.
	serverDBFile = "fieldsync.db"
	// envFieldsyncBin names a fieldsync binary to use instead of building
	// one.
	envFieldsyncBin = "FIELDSIM_FIELDSYNC"
)

// seedSpec is server/seed.Spec: what `fieldsync seed` prepares.
type seedSpec struct {
	Demo       bool             `json:"demo"`
	Places     []seedPlace      `json:"places,omitempty"`
	Households []seedHouseholds `json:"households,omitempty"`
}

type seedPlace struct {
	Code       string `json:"code"`
	Name       string `json:"name"`
	Level      string `json:"level"`
	ParentCode string `json:"parent_code,omitempty"`
}

// seedHouseholds asks for Count generated households in Place or, with
// EachEmptyGroup, in every group under Place that has none. Two entries
// need two seeds (a seed always gives the same ids).
type seedHouseholds struct {
	Place          string `json:"place"`
	EachEmptyGroup bool   `json:"each_empty_group,omitempty"`
	Count          int    `json:"count"`
	Seed           uint64 `json:"seed"`
	Batch          int    `json:"batch,omitempty"`
}

// seedManifest is server/seed.Manifest: what a data folder holds.
type seedManifest struct {
	Database string `json:"database"`
	Admin    *struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"admin"`
	Demo *struct {
		Village      string `json:"village"`
		OtherVillage string `json:"other_village"`
	} `json:"demo"`
	Imported []struct {
		Place   string  `json:"place"`
		Count   int     `json:"count"`
		Seconds float64 `json:"seconds"`
	} `json:"imported"`
	HouseholdsTotal int `json:"households_total"`
}

// builtBinary is the fieldsync binary this process built (once).
var builtBinary struct {
	mu   sync.Mutex
	dir  string
	path string
}

// fieldsyncBinary returns $FIELDSIM_FIELDSYNC, or builds
// ./server/cmd/fieldsync into a temp folder on first use (removed by
// removeBuiltBinary).
func fieldsyncBinary(ctx context.Context) (string, error) {
	if p := os.Getenv(envFieldsyncBin); p != "" {
		return p, nil
	}
	builtBinary.mu.Lock()
	defer builtBinary.mu.Unlock()
	if builtBinary.path != "" {
		return builtBinary.path, nil
	}
	dir, err := os.MkdirTemp("", "fieldsim-fieldsync-")
	if err != nil {
		return "", err
	}
	bin, err := buildServer(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%w (or name a fieldsync binary in $%s)", err, envFieldsyncBin)
	}
	builtBinary.dir, builtBinary.path = dir, bin
	return bin, nil
}

// removeBuiltBinary removes the binary fieldsyncBinary built, if any.
func removeBuiltBinary() {
	builtBinary.mu.Lock()
	defer builtBinary.mu.Unlock()
	if builtBinary.dir != "" {
		os.RemoveAll(builtBinary.dir)
		builtBinary.dir, builtBinary.path = "", ""
	}
}

// seedData runs `fieldsync seed -data dir -spec -` (with -db db when db
// is not empty) with spec and returns its manifest. On SQLite the server
// must not be running on dir.
func seedData(ctx context.Context, bin, dir, db string, spec seedSpec) (seedManifest, error) {
	var m seedManifest
	in, err := json.Marshal(spec)
	if err != nil {
		return m, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Hour) // a million households take minutes
	defer cancel()
	args := []string{"seed", "-data", dir, "-spec", "-"}
	if db != "" {
		args = append(args, "-db", db)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return m, fmt.Errorf("fieldsync seed: %w\n%s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		return m, fmt.Errorf("fieldsync seed: manifest: %w", err)
	}
	if spec.Demo {
		if m.Admin == nil || m.Demo == nil {
			return m, fmt.Errorf("fieldsync seed: the manifest names no demo admin or places: %s", stdout.String())
		}
		if m.Admin.Username != demoAdmin || m.Admin.Password != demoPassword ||
			m.Demo.Village != demoVillageCode || m.Demo.OtherVillage != demoOtherVillageCode {
			return m, fmt.Errorf("fieldsync seed: the demo county changed (admin %s, villages %s and %s); update fieldsim's demo constants",
				m.Admin.Username, m.Demo.Village, m.Demo.OtherVillage)
		}
	}
	return m, nil
}

// sqliteDSN is a go-sqlite3 DSN with the server's connection settings
// (server/sqlstore.DSN: WAL, synchronous=FULL, foreign keys, a 10 s busy
// timeout, a 16 MB page cache, 32 cached statements); readOnly opens it
// query-only.
func sqliteDSN(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "10000")
	if readOnly {
		q.Set("mode", "ro")
		q.Set("_query_only", "true")
	} else {
		q.Set("_txlock", "immediate")
	}
	q.Set("_cache_size", "-16000")
	q.Set("_stmt_cache_size", "32")
	return "file:" + path + "?" + q.Encode()
}

// serverDBPath is the SQLite file of a data folder.
func serverDBPath(dataDir string) string { return filepath.Join(dataDir, serverDBFile) }

// otherVillageHouseholds gives the demo's second village (which the demo
// leaves empty) perGroup households in each of its groups, so that moving
// a worker there moves real households.
func otherVillageHouseholds(perGroup int) seedSpec {
	return seedSpec{Households: []seedHouseholds{{Place: demoOtherVillageCode, EachEmptyGroup: true, Count: perGroup, Seed: 2}}}
}
