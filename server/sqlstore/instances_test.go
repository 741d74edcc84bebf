package sqlstore_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"fieldsync/server/domain"
	"fieldsync/server/evidence"
	"fieldsync/server/evidence/evidencetest"
	"fieldsync/server/servertest"
	"fieldsync/server/servertest/pgtest"
	"fieldsync/server/sqlstore"
	"fieldsync/server/upload"
	"fieldsync/server/upload/uploadtest"
	"fieldsync/syncproto"
)

// unanalysed records n blobs queued for analysis through st and returns
// their sums, oldest first.
func unanalysed(t *testing.T, st *sqlstore.Store, prefix string, n int) []string {
	t.Helper()
	var bs []upload.Blob
	var sums []string
	base := time.Now().Add(-time.Hour)
	for i := range n {
		sum := uploadtest.Sum(fmt.Appendf(nil, "%s %d", prefix, i))
		bs = append(bs, upload.Blob{SHA256: sum, Size: 10, MediaType: "image/jpeg", StoredAt: base.Add(time.Duration(i) * time.Millisecond)})
		sums = append(sums, sum)
	}
	if err := st.RecordBlobs(ctx, bs); err != nil {
		t.Fatal(err)
	}
	return sums
}

// claimAll runs workers that claim and record blobs on the given stores
// until the queue is empty, and returns how often each blob was claimed.
func claimAll(t *testing.T, stores []*sqlstore.Store, perStore int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	claims := map[string]int{}
	var wg sync.WaitGroup
	for _, st := range stores {
		for range perStore {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					bs, err := st.ClaimBlobsForAnalysis(ctx, 3, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if len(bs) == 0 {
						left, err := st.UnanalysedBlobs(ctx, 1)
						if err != nil {
							t.Error(err)
							return
						}
						if len(left) == 0 {
							return
						}
						time.Sleep(time.Millisecond) // held by another worker
						continue
					}
					for _, b := range bs {
						mu.Lock()
						claims[b.SHA256]++
						mu.Unlock()
						if err := st.BlobAnalysed(ctx, b.SHA256, evidence.Meta{MediaType: "image/jpeg"}); err != nil {
							t.Error(err)
							return
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	return claims
}

func checkOnce(t *testing.T, sums []string, claims map[string]int) {
	t.Helper()
	if len(claims) != len(sums) {
		t.Errorf("%d blobs claimed, want %d", len(claims), len(sums))
	}
	for _, sum := range sums {
		if claims[sum] != 1 {
			t.Errorf("blob %s claimed %d times, want once", sum[:8], claims[sum])
		}
	}
}

// TestAnalysisClaims_ExactlyOnceAcrossInstances: three stores on one
// PostgreSQL database, two workers each, claim and record 60 queued
// blobs: every blob is claimed exactly once.
func TestAnalysisClaims_ExactlyOnceAcrossInstances(t *testing.T) {
	stores := instancesOn(t, pgtest.NewDatabase(t), 3)
	sums := unanalysed(t, stores[0], "photo", 60)
	checkOnce(t, sums, claimAll(t, stores, 2))
}

// TestAnalysisClaims_SQLite: the same claims on SQLite's single writer.
func TestAnalysisClaims_SQLite(t *testing.T) {
	st, err := sqlstore.Open(ctx, sqlstore.Config{Path: filepath.Join(t.TempDir(), "fieldsync.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sums := unanalysed(t, st, "photo", 60)
	checkOnce(t, sums, claimAll(t, []*sqlstore.Store{st}, 3))
}

// TestAnalysisClaims_LeasesAndRelease: a claim whose owner died (its
// lease passed) is taken over; a live one is left alone; a blob given
// back with a retry delay is not claimed before it, one given back at
// once is.
func TestAnalysisClaims_LeasesAndRelease(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ab := instancesOn(t, url, 2)
	a, b := ab[0], ab[1]
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	sums := unanalysed(t, a, "leased", 2)
	dead, alive := sums[0], sums[1]
	past := time.Now().Add(-time.Minute).UTC().Format("2006-01-02T15:04:05.000000000Z")
	future := time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000000000Z")
	for _, c := range []struct{ sum, owner, until string }{{dead, "dead", past}, {alive, "alive", future}} {
		if _, err := db.ExecContext(ctx, `UPDATE blobs SET analysis_owner = $1, analysis_lease_until = $2 WHERE sha256 = $3`, c.owner, c.until, c.sum); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.ClaimBlobsForAnalysis(ctx, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].SHA256 != dead {
		t.Fatalf("claimed %v, want only the dead instance's blob", got)
	}
	var owner string
	if err := db.QueryRowContext(ctx, `SELECT analysis_owner FROM blobs WHERE sha256 = $1`, dead).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner != b.Instance() {
		t.Errorf("owner %q, want %q", owner, b.Instance())
	}
	// Held by b: a sees nothing to claim.
	if got, err := a.ClaimBlobsForAnalysis(ctx, 10, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("a claimed %v (%v) while b holds it", got, err)
	}
	// a cannot give back b's claim.
	if err := a.ReleaseBlobClaims(ctx, []string{dead}, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.ClaimBlobsForAnalysis(ctx, 10, time.Minute); len(got) != 0 {
		t.Fatalf("a released b's claim: claimed %v", got)
	}
	// b gives it back for a retry in an hour: nobody claims it now.
	if err := b.ReleaseBlobClaims(ctx, []string{dead}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.ClaimBlobsForAnalysis(ctx, 10, time.Minute); len(got) != 0 {
		t.Fatalf("claimed %v before its retry time", got)
	}
	// Made due (as an hour passing would): a takes it, records it, and
	// the claim is gone with the analysis.
	if _, err := db.ExecContext(ctx, `UPDATE blobs SET analysis_lease_until = $1 WHERE sha256 = $2`, past, dead); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.ClaimBlobsForAnalysis(ctx, 10, time.Minute); len(got) != 1 || got[0].SHA256 != dead {
		t.Fatalf("claimed %v, want the due blob", got)
	}
	if err := a.BlobAnalysed(ctx, dead, evidence.Meta{MediaType: "image/jpeg"}); err != nil {
		t.Fatal(err)
	}
	var left sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT analysis_owner FROM blobs WHERE sha256 = $1`, dead).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left.Valid {
		t.Errorf("analysed blob still claimed by %q", left.String)
	}
	if got, _ := b.ClaimBlobsForAnalysis(ctx, 10, time.Minute); len(got) != 0 {
		t.Errorf("claimed %v: the analysed blob or the live claim", got)
	}
}

// TestSingleton_OneHolderAtATime: on PostgreSQL one instance at a time
// holds a named lock; the other's try fails until it is released, and a
// holder that goes away (its connection closes) frees it.
func TestSingleton_OneHolderAtATime(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ab := instancesOn(t, url, 2)
	a, b := ab[0], ab[1]
	release, ok, err := a.TrySingleton(ctx, "upload-sweep")
	if err != nil || !ok {
		t.Fatalf("first try: ok %v, err %v", ok, err)
	}
	if _, ok, err := b.TrySingleton(ctx, "upload-sweep"); err != nil || ok {
		t.Fatalf("second holder: ok %v, err %v", ok, err)
	}
	if _, ok, err := a.TrySingleton(ctx, "upload-sweep"); err != nil || ok {
		t.Fatalf("the same instance again: ok %v, err %v", ok, err)
	}
	relOther, ok, err := b.TrySingleton(ctx, "other-sweep")
	if err != nil || !ok {
		t.Fatalf("another name: ok %v, err %v", ok, err)
	}
	relOther()
	release()
	release() // idempotent
	relB, ok, err := b.TrySingleton(ctx, "upload-sweep")
	if err != nil || !ok {
		t.Fatalf("after release: ok %v, err %v", ok, err)
	}
	relB()
}

// twoInstances starts two API servers on one PostgreSQL database.
func twoInstances(t *testing.T) (a, b *servertest.Env) {
	t.Helper()
	if os.Getenv(pgtest.EnvURL) == "" {
		pgtest.NewDatabase(t) // skips, or fails when PostgreSQL is required
	}
	t.Setenv("FIELDSYNC_TEST_ENGINE", "postgres")
	a = servertest.Start(t)
	b = servertest.StartWith(t, servertest.Options{Dir: a.Dir}) // the same database
	return a, b
}

// TestNearDuplicate_AcrossInstances: a photo recorded (with its hashes) on
// instance A is found as a near duplicate of a photo recorded later on
// instance B, whose index was loaded before A's photo arrived.
func TestNearDuplicate_AcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	dev := uploadtest.NewDevice(t, a, "worker", "G11")
	h1, h2 := syncproto.NewID(time.Now()), syncproto.NewID(time.Now())
	uploadtest.Household(t, a, h1, "G11")
	uploadtest.Household(t, a, h2, "G11")
	push := func(env *servertest.Env, hh string, photo []byte) string {
		id := syncproto.NewID(time.Now())
		m := syncproto.Mutation{Kind: syncproto.KindVisitCreate, Visit: ptr(uploadtest.Visit(id, hh, uploadtest.Ref(photo, "progress")))}
		resp := dev.Push(t, m)
		m.Seq = resp.Results[0].Seq
		if err := env.Store.RunEvidenceChecksForPush(ctx, &syncproto.PushRequest{Mutations: []syncproto.Mutation{m}}, resp); err != nil {
			t.Fatal(err)
		}
		return id
	}
	orig := evidencetest.JPEG(evidencetest.Photo{Seed: 7, Width: 640, Height: 480})
	copyOf := evidencetest.JPEG(evidencetest.Photo{Seed: 7, Width: 480, Height: 360, Quality: 50})
	n1 := push(a, h1, orig)
	arrive(t, a, orig)
	n2 := push(b, h2, copyOf)
	arrive(t, b, copyOf)
	if got, want := flagsOf(t, b, n2), at(uploadtest.Sum(copyOf), evidence.FlagNearDuplicate); got != want {
		t.Errorf("copy checked on B: %q, want %q", got, want)
	}
	if got, want := flagsOf(t, a, n1), at(uploadtest.Sum(orig), evidence.FlagNearDuplicate); got != want {
		t.Errorf("original: %q, want %q", got, want)
	}
	// And the other way: A's index finds what B recorded.
	n3 := push(a, h1, orig)
	if err := a.Store.RunEvidenceChecks(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if got, want := flagsOf(t, a, n3), at(uploadtest.Sum(orig), evidence.FlagNearDuplicate); got != want {
		t.Errorf("a second visit with the original, checked on A: %q", got)
	}
}

// TestEpoch_AcrossInstances: a new epoch started on instance A resets the
// cursors that instance B answers.
func TestEpoch_AcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	u := b.CreateUser(t, "worker", domain.RoleFieldWorker, "G11")
	d := newDevice(t, b, u)
	_, cursor := d.pullAll("", 0)
	// Before: B continues the cursor without a reset.
	ops, cursor := d.pullAll(cursor, 0)
	for _, op := range ops {
		if op.Op == syncproto.OpReset {
			t.Fatal("reset before any new epoch")
		}
	}
	if err := a.Store.NewEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	ops, _ = d.pullAll(cursor, 0)
	if len(ops) == 0 || ops[0].Op != syncproto.OpReset {
		t.Fatalf("B's pull after A's new epoch: %d ops, first %v; want a reset", len(ops), ops)
	}
	if b.Store.Epoch() != a.Store.Epoch() {
		t.Errorf("B's epoch %q, A's %q", b.Store.Epoch(), a.Store.Epoch())
	}
}

// TestAnalysisClaims_RestartTakesOwnClaimsBack: claims held when a store
// stops (a crash mid-analysis) are claimable at once when it opens again:
// on SQLite all of them, on PostgreSQL those of the same InstanceID, while
// another instance's stay held.
func TestAnalysisClaims_RestartTakesOwnClaimsBack(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "fieldsync.db")
		st, err := sqlstore.Open(ctx, sqlstore.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		sums := unanalysed(t, st, "crash", 3)
		if got, err := st.ClaimBlobsForAnalysis(ctx, 10, time.Hour); err != nil || len(got) != 3 {
			t.Fatalf("claimed %d (%v)", len(got), err)
		}
		st.Close()
		st, err = sqlstore.Open(ctx, sqlstore.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		checkOnce(t, sums, claimAll(t, []*sqlstore.Store{st}, 1))
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		open := func(id string) *sqlstore.Store {
			st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: url, InstanceID: id})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		a, b := open("a"), open("b")
		defer b.Close()
		sums := unanalysed(t, a, "crash", 4)
		if got, err := a.ClaimBlobsForAnalysis(ctx, 2, time.Hour); err != nil || len(got) != 2 {
			t.Fatalf("a claimed %d (%v)", len(got), err)
		}
		if got, err := b.ClaimBlobsForAnalysis(ctx, 2, time.Hour); err != nil || len(got) != 2 {
			t.Fatalf("b claimed %d (%v)", len(got), err)
		}
		a.Close()
		a = open("a")
		defer a.Close()
		got, err := a.ClaimBlobsForAnalysis(ctx, 10, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].SHA256 != sums[0] || got[1].SHA256 != sums[1] {
			t.Errorf("a after its restart claimed %v, want its own two", got)
		}
	})
}

// instancesOn opens n stores on the PostgreSQL database at url, as n
// fieldsync instances would, closed when the test ends.
func instancesOn(t *testing.T, url string, n int) []*sqlstore.Store {
	t.Helper()
	stores := make([]*sqlstore.Store, n)
	for i := range stores {
		st, err := sqlstore.Open(ctx, sqlstore.Config{PostgresURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores[i] = st
	}
	return stores
}
