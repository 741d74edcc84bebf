package sqlstore_test

import (
	"bytes"
	"compress/gzip"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"fieldsync/server/auth"
	"fieldsync/server/domain"
	"fieldsync/server/servertest"
	"fieldsync/server/sqlstore"
	"fieldsync/syncproto"
)

// benchDevices enrolls n devices for one worker straight through the store.
func benchDevices(b *testing.B, env *servertest.Env, u domain.User, n int) []*device {
	var out []*device
	for i := 0; i < n; i++ {
		code := fmt.Sprintf("code-%d-%d", u.ID, i)
		if err := env.Store.CreateEnrollmentCode(ctx, auth.HashToken(code), u.ID, 0, time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
		dev, err := env.Store.Enroll(ctx, auth.HashToken(code), domain.Device{ID: syncproto.NewID(time.Now())}, auth.HashToken(code+"t"))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, &device{t: b, env: env, dev: sqlstore.PushDevice{DeviceID: dev.ID, UserID: u.ID}})
	}
	return out
}

const benchHH = "01JDZX5Q7R8S9T0V1W2X3Y4Z5A"

// BenchmarkPushVisits measures durably acknowledged visits per second with
// 1, 50 and 200 devices pushing batches of 20 concurrently, with and
// without group commit.
func BenchmarkPushVisits(b *testing.B) {
	for _, devices := range []int{1, 50, 200} {
		for _, gc := range []bool{true, false} {
			b.Run(fmt.Sprintf("devices=%d/group_commit=%v", devices, gc), func(b *testing.B) {
				env := servertest.StartWith(b, servertest.Options{Store: sqlstore.Config{DisableGroupCommit: !gc}})
				env.AddHouseholds(b, household(benchHH, "G11", "王建国"))
				u := env.CreateUser(b, "bench", domain.RoleFieldWorker, "V1")
				devs := benchDevices(b, env, u, devices)
				batches := max(1, 1000/(devices*20)) // ≥ 1000 visits a round
				b.ResetTimer()
				start := time.Now()
				total := 0
				for i := 0; i < b.N; i++ {
					var wg sync.WaitGroup
					for _, d := range devs {
						wg.Add(1)
						go func(d *device) {
							defer wg.Done()
							for k := 0; k < batches; k++ {
								var ms []syncproto.Mutation
								for j := 0; j < 20; j++ {
									ms = append(ms, visitMut(d, benchHH))
								}
								resp, err := env.Store.Push(ctx, d.dev, &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms})
								if err != nil || resp.Results[19].Status != syncproto.StatusApplied {
									b.Errorf("push: %v", err)
									return
								}
							}
						}(d)
					}
					wg.Wait()
					total += devices * batches * 20
				}
				b.ReportMetric(float64(total)/time.Since(start).Seconds(), "visits/s")
			})
		}
	}
}

// BenchmarkWriterVisit measures the single writer's work per visit: a
// push of 20 visits applied in the writer's transaction and rolled back,
// so neither the commit (fsync) nor the request's side (decoding,
// preparePush, measured apart as prepare-cpu-µs/visit) is counted. The
// device's numbers restart at 1 each round since nothing is kept. The
// process's CPU time is reported beside the wall time, which a shared
// machine inflates.
func BenchmarkWriterVisit(b *testing.B) {
	env := servertest.Start(b)
	env.AddHouseholds(b, household(benchHH, "G11", "王建国"))
	u := env.CreateUser(b, "bench", domain.RoleFieldWorker, "V1")
	d := benchDevices(b, env, u, 1)[0]
	var prep, writer time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		d.seq = 0
		var ms []syncproto.Mutation
		for j := 0; j < 20; j++ {
			ms = append(ms, visitMut(d, benchHH))
		}
		req := &syncproto.PushRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Mutations: ms}
		c0 := cpuTime(b)
		pre := env.Store.PreparePush(req)
		c1 := cpuTime(b)
		b.StartTimer()
		resp, err := env.Store.ApplyPushRolledBack(ctx, d.dev, req, pre)
		b.StopTimer()
		c2 := cpuTime(b)
		b.StartTimer()
		if err != nil || resp.Results[19].Status != syncproto.StatusApplied {
			b.Fatalf("push: %v %+v", err, resp)
		}
		prep += c1 - c0
		writer += c2 - c1
	}
	visits := float64(20 * b.N)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/visits, "writer-µs/visit")
	b.ReportMetric(float64(writer.Microseconds())/visits, "writer-cpu-µs/visit")
	b.ReportMetric(float64(prep.Microseconds())/visits, "prepare-cpu-µs/visit")
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRawSQLiteInsert is the limit: the same visit rows inserted in
// batches of 20 per transaction, same file settings (WAL, synchronous=FULL).
func BenchmarkRawSQLiteInsert(b *testing.B) {
	path := filepath.Join(b.TempDir(), "raw.db")
	db, err := sql.Open("sqlite3", sqlstore.DSN(path, false, 5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE visits (id TEXT PRIMARY KEY, household_id TEXT, place_code TEXT, device_id TEXT, user_id INTEGER,
		form_id TEXT, form_version INTEGER, answers TEXT, lon REAL, lat REAL, accuracy_m REAL, device_time TEXT, server_time TEXT, hlc TEXT, content_hash TEXT)`); err != nil {
		b.Fatal(err)
	}
	answers, _ := json.Marshal(waterAnswers())
	b.ResetTimer()
	start := time.Now()
	total := 0
	for i := 0; i < b.N; i++ {
		for k := 0; k < 50; k++ {
			tx, err := db.Begin()
			if err != nil {
				b.Fatal(err)
			}
			for j := 0; j < 20; j++ {
				now := time.Now()
				if _, err := tx.Exec(`INSERT INTO visits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
					syncproto.NewID(now), benchHH, "G11", "dev", 1, "water_cellar_progress", 1, string(answers), 103.15, 25.15, 8.0,
					domain.Timestamp(now), domain.Timestamp(now), "x", "h"); err != nil {
					b.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			total += 20
		}
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "rows/s")
}

func manyHouseholds(n int, place string) []syncproto.Household {
	hs := make([]syncproto.Household, 0, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		h := household(syncproto.NewID(t0), place, fmt.Sprintf("户主%06d", i))
		h.Fields["location"] = json.RawMessage(fmt.Sprintf(`{"lon":%.6f,"lat":%.6f}`, 103.1+float64(i%1000)*0.00005, 25.1+float64(i/1000)*0.00005))
		h.Fields["poverty_status"] = json.RawMessage(`"lifted"`)
		h.Fields["address"] = json.RawMessage(`"采山坪组"`)
		hs = append(hs, h)
	}
	return hs
}

func gzipSize(v any) int {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	json.NewEncoder(zw).Encode(v)
	zw.Close()
	return buf.Len()
}

// BenchmarkFirstPull10k: the first sync of a device whose scope holds
// 10,000 households (all pages, default page size).
func BenchmarkFirstPull10k(b *testing.B) {
	env := servertest.Start(b)
	for i := 0; i < 10; i++ {
		env.AddHouseholds(b, manyHouseholds(1000, "G11")...)
	}
	d := benchDevices(b, env, env.CreateUser(b, "w", domain.RoleFieldWorker, "V1"), 1)[0]
	b.ResetTimer()
	var bytesOnWire, ops, pages int
	for i := 0; i < b.N; i++ {
		cursor := ""
		bytesOnWire, ops, pages = 0, 0, 0
		for {
			resp, err := env.Store.Pull(ctx, d.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Cursor: cursor, MaxBytes: syncproto.MaxPullBytes})
			if err != nil {
				b.Fatal(err)
			}
			bytesOnWire += gzipSize(resp)
			ops += len(resp.Ops)
			pages++
			cursor = resp.Cursor
			if !resp.HasMore {
				break
			}
		}
	}
	b.ReportMetric(float64(bytesOnWire), "gzip_bytes")
	b.ReportMetric(float64(ops), "ops")
	b.ReportMetric(float64(pages), "pages")
}

// BenchmarkNoopPull measures a pull that has nothing new, with 10k and 1M
// households in the database (the device sees 10k of them either way).
func BenchmarkNoopPull(b *testing.B) {
	for _, total := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("households=%d", total), func(b *testing.B) {
			env := servertest.Start(b)
			for i := 0; i < 10; i++ {
				env.AddHouseholds(b, manyHouseholds(1000, "G11")...)
			}
			for rest := total - 10_000; rest > 0; rest -= 20_000 {
				env.AddHouseholds(b, manyHouseholds(min(rest, 20_000), "G21")...)
			}
			d := benchDevices(b, env, env.CreateUser(b, "w", domain.RoleFieldWorker, "V1"), 1)[0]
			_, cursor := d.pullAll("", syncproto.MaxPullBytes)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				resp, err := env.Store.Pull(ctx, d.dev, &syncproto.PullRequest{ProtocolVersion: 1, DeviceID: d.dev.DeviceID, Cursor: cursor})
				if err != nil || len(resp.Ops) != 0 {
					b.Fatalf("noop pull: %v %d ops", err, len(resp.Ops))
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99_ms")
		})
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}
