package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"image"
	"image/png"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chunkSize is the app's tus chunk (CHUNK in js/sync.js).
const chunkSize = 256 * 1024

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// noisePNG is a PNG of random pixels (it does not compress), small enough
// on its long side to be uploaded as it is.
func noisePNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = byte(r.Uint32())
	}
	for i := 3; i < len(img.Pix); i += 4 {
		img.Pix[i] = 255
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBrowser_FieldAppUploadResumes is "Cut upload" of issue 14: a 5 MB
// scan goes up over a throttled link (256 KB/s), the browser is killed in
// the middle of the tus upload, and a new browser on the same profile
// resumes it at the same upload URL from the server's offset. A counting
// proxy between the browser and the server measures the PATCH bytes:
// those sent twice stay within 2% of the file plus one chunk.
func TestBrowser_FieldAppUploadResumes(t *testing.T) {
	profile := t.TempDir()
	ctx, problems, kill := newBrowserOn(t, 800, 1280, profile)
	base, _ := testServer(t)
	// The browser reaches the server through a proxy that counts the
	// upload bytes it passes on (PATCH bodies).
	var patched atomic.Int64
	target, _ := url.Parse(base)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // the killed browser's last PATCH
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			r.Body = &countingBody{r.Body, &patched}
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	en := demoEnrollment(t, base, "wangge_zhao")
	app := proxy.URL + "/app/"
	step(t, ctx, "enroll", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("code")),
		chromedp.SendKeys(chromedp.ID("code"), en.Code), chromedp.Click(chromedp.ID("enrollbtn")))
	waitFor(t, ctx, "first sync", `/^[1-9][0-9]* 户$/.test((document.getElementById('hhcount') || {}).textContent || '')`)
	waitFor(t, ctx, "service worker in control", `!!navigator.serviceWorker.controller`)
	hh := eval[string](t, ctx, `fieldsyncApp.db.read(['households'], t => t.all('households', null, 1)).then(r => r[0].id)`)
	token := eval[string](t, ctx, `fieldsyncApp.db.getMeta('token')`)

	pic := noisePNG(t, 1300, 1300) // about 5 MB, and small enough on its long side to go up byte for byte
	sum := sha256.Sum256(pic)
	sha := hex.EncodeToString(sum[:])
	if len(pic) < 5_000_000 {
		t.Fatalf("the scan is %d bytes, want 5 MB", len(pic))
	}
	picPath := filepath.Join(t.TempDir(), "scan.png")
	if err := os.WriteFile(picPath, pic, 0o600); err != nil {
		t.Fatal(err)
	}
	lat, lon, acc := 25.01, 103.71, 5.0
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "geolocation"}, Setting: "granted", Origin: proxy.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetGeolocationOverride, emulation.SetGeolocationOverrideParams{Latitude: &lat, Longitude: &lon, Accuracy: &acc}); err != nil {
		t.Fatal(err)
	}
	// A slow uplink: 256 KB/s.
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{Latency: 20, DownloadThroughput: -1, UploadThroughput: 256 * 1024}}}); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "form", chromedp.Navigate(app+"#/visit/"+hh+"/water_cellar_progress"), chromedp.WaitVisible(chromedp.ID("f_site_name")))
	waitFor(t, ctx, "GPS fix", `document.getElementById('gpsline').textContent.includes('±5 米')`)
	step(t, ctx, "fill",
		chromedp.SendKeys(chromedp.ID("f_site_name"), "新水窖"),
		chromedp.SendKeys(chromedp.ID("f_capacity_m3"), "24"),
		chromedp.Click(chromedp.CSS(`input[name="stage"][value="planned"]`)),
		chromedp.SetUploadFiles(chromedp.CSS(`input[data-slot-gallery="progress"]`), []string{picPath}, chromedp.NodeReady))
	eval[bool](t, ctx, `(() => { const d = document.getElementById('f_due_date'); d.value = '2027-05-01'; d.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
	waitFor(t, ctx, "picture in the slot", `document.querySelectorAll('#slot_progress img').length === 1`)
	waitFor(t, ctx, "draft holds the picture", `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d.length === 1 && d[0].evidence.length === 1)`)
	if got := eval[string](t, ctx, `fieldsyncApp.db.read(['drafts'], t => t.all('drafts')).then(d => d[0].evidence[0].sha256)`); got != sha {
		t.Fatalf("the app hashed the picture as %s, want %s (kept byte for byte)", got, sha)
	}
	step(t, ctx, "save", chromedp.Click(chromedp.ID("save"))) // a sync follows by itself

	// The upload starts; wait until the server holds at least a chunk.
	uploadURL := ""
	headOffset := func() int64 {
		req, _ := http.NewRequest("HEAD", base+uploadURL, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Tus-Resumable", "1.0.0")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		n, _ := strconv.ParseInt(res.Header.Get("Upload-Offset"), 10, 64)
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	var cutAt int64
	for time.Now().Before(deadline) {
		if uploadURL == "" {
			u := eval[string](t, ctx, `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => (u && u.tus && u.tus.uploadUrl) || '')`)
			if u != "" {
				uploadURL = strings.TrimPrefix(u, proxy.URL)
			}
		}
		if uploadURL != "" {
			if cutAt = headOffset(); cutAt >= 1024*1024 {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cutAt < 1024*1024 || cutAt >= int64(len(pic)) {
		t.Fatalf("upload %q at offset %d of %d before the cut", uploadURL, cutAt, len(pic))
	}
	// The tablet dies mid-upload, half a chunk later (a chunk takes about
	// a second at 256 KB/s): no orderly shutdown, no offline event.
	time.Sleep(500 * time.Millisecond)
	kill()
	offAfterCut := headOffset()
	sentBefore := patched.Load()
	ctx, problems2, _ := newBrowserOn(t, 800, 1280, profile)
	setOffline(t, ctx, true)
	step(t, ctx, "reopen offline", chromedp.Navigate(app+"#/"), chromedp.WaitVisible(chromedp.ID("syncbtn")))
	if st := eval[string](t, ctx, `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => u.state)`); st != "pending" {
		t.Fatalf("upload state after the cut: %s", st)
	}
	setOffline(t, ctx, false) // online again: the app syncs by itself
	waitFor(t, ctx, "upload done", `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => u.state === 'done')`)
	resumedURL := eval[string](t, ctx, `fieldsyncApp.db.read(['uploads'], t => t.get('uploads', '`+sha+`')).then(u => (u.tus && u.tus.uploadUrl) || '')`)
	if !strings.HasSuffix(resumedURL, uploadURL) {
		t.Errorf("the upload restarted at %s instead of resuming %s", resumedURL, uploadURL)
	}
	applog := eval[string](t, ctx, `fieldsyncApp.db.read(['log'], t => t.all('log')).then(r => r.map(x => x.text).join('\n'))`)
	if !strings.Contains(applog, "断点续传") {
		t.Errorf("the log does not show a resumed upload:\n%s", applog)
	}
	req, _ := http.NewRequest("GET", base+"/api/v1/evidence/"+sha, nil)
	req.Header.Set("Authorization", "Bearer "+en.AdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var stored bytes.Buffer
	stored.ReadFrom(res.Body)
	res.Body.Close()
	got := sha256.Sum256(stored.Bytes())
	if res.StatusCode != 200 || hex.EncodeToString(got[:]) != sha {
		t.Errorf("server blob: %d, %d bytes", res.StatusCode, stored.Len())
	}
	// Bytes sent twice: everything the server was sent beyond the file.
	twice := patched.Load() - int64(len(pic))
	if limit := int64(len(pic))/50 + chunkSize; twice < 0 || twice > limit {
		t.Errorf("%d PATCH bytes for a %d-byte file: %d sent twice, want at most %d (2%% plus one chunk)", patched.Load(), len(pic), twice, limit)
	}
	t.Logf("cut at server offset %d (HEAD after the kill: %d, PATCH bytes before the kill: %d) of %d bytes; resumed at the same upload URL; %d bytes sent twice (%.2f%% of the file)",
		cutAt, offAfterCut, sentBefore, len(pic), twice, 100*float64(twice)/float64(len(pic)))
	for _, p := range append(problems(), problems2()...) {
		if strings.Contains(p, "Failed to load resource") || strings.Contains(p, "ERR_INTERNET_DISCONNECTED") {
			continue // the cut itself
		}
		t.Errorf("page problem: %s", p)
	}
}
