package state

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/tilestream/tilestream/tiling"
)

// fakeS3 is an S3-compatible server in the test process (gofakes3 in
// memory, behind httptest) with one bucket, path-style addressing and a
// clock that stands still (Last-Modified never moves: a replaced object
// shows only by its entity tag). It records the requests it serves, and
// beforeObject, when set, runs before each object GET or HEAD is served,
// and answers it instead when it returns true. Creating one keeps the
// machine's AWS settings out of the test (isolateAWSEnv).
type fakeS3 struct {
	url, bucket string
	backend     *s3mem.Backend
	client      *s3.Client // the test's own, as a user's tool

	mu struct {
		sync.Mutex
		requests     []fakeRequest
		beforeObject func(key string, w http.ResponseWriter, r *http.Request) bool
		latency      time.Duration // added to every request (benchmarks)
	}
}

// fakeRequest is one request the fake served: method, object key ("" for
// a bucket request), query and Range header.
type fakeRequest struct {
	method, key string
	query       url.Values
	rng         string
}

func newFakeS3(t testing.TB) *fakeS3 {
	t.Helper()
	isolateAWSEnv(t)
	clock := gofakes3.FixedTimeSource(time.Date(2024, 3, 12, 8, 0, 0, 0, time.UTC))
	f := &fakeS3{bucket: "lake", backend: s3mem.New(s3mem.WithTimeSource(clock))}
	faker := gofakes3.New(f.backend, gofakes3.WithTimeSource(clock), gofakes3.WithTimeSkewLimit(0), gofakes3.WithLogger(gofakes3.DiscardLog()))
	h := faker.Server()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		f.mu.Lock()
		f.mu.requests = append(f.mu.requests, fakeRequest{r.Method, key, r.URL.Query(), r.Header.Get("Range")})
		hook, latency := f.mu.beforeObject, f.mu.latency
		f.mu.Unlock()
		time.Sleep(latency)
		object := (r.Method == http.MethodGet || r.Method == http.MethodHead) && bucket == f.bucket && key != ""
		if hook != nil && object && hook(key, w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	// A read that fails cancels the downloads ahead of it; gofakes3 then
	// answers an error on a response already started, which net/http logs.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	f.url = srv.URL
	if err := f.backend.CreateBucket(f.bucket); err != nil {
		t.Fatal(err)
	}
	f.client = s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(f.url), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
	return f
}

// config returns the offline log's config for prefix on the fake.
func (f *fakeS3) config(prefix string) S3Config {
	c := DefaultS3Config()
	c.Bucket, c.Prefix, c.Region, c.Endpoint, c.PathStyle = f.bucket, prefix, "us-east-1", f.url, true
	c.Credentials = credentials.NewStaticCredentialsProvider("test", "test", "")
	return c
}

// requests returns the requests served since the last call.
func (f *fakeS3) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.mu.requests
	f.mu.requests = nil
	return r
}

// setLatency delays every later request by d, as a round trip to a
// remote store would.
func (f *fakeS3) setLatency(d time.Duration) {
	f.mu.Lock()
	f.mu.latency = d
	f.mu.Unlock()
}

func (f *fakeS3) setBeforeObject(fn func(key string, w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.mu.beforeObject = fn
	f.mu.Unlock()
}

// object returns an object's bytes from the fake's backend, without a
// request (a hook may call it).
func (f *fakeS3) object(t testing.TB, key string) []byte {
	t.Helper()
	obj, err := f.backend.GetObject(f.bucket, key, nil)
	if err != nil {
		t.Errorf("object %s: %v", key, err)
		return nil
	}
	defer obj.Contents.Close()
	b, err := io.ReadAll(obj.Contents)
	if err != nil {
		t.Error(err)
	}
	return b
}

// isolateAWSEnv keeps the machine's AWS settings out of the test, as
// cmd/tilestream's end-to-end test does: every AWS_* variable unset for
// the test's duration, the shared config and credentials files empty, no
// instance metadata. Otherwise LoadDefaultConfig would read them: an
// AWS_PROFILE this machine lacks fails it, and a profile's retry mode,
// attempts or checksum validation change what the tests see.
func isolateAWSEnv(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "") // restores the value after the test
			os.Unsetenv(k)
		}
	}
	dir := t.TempDir()
	for _, k := range []string{"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"} {
		empty := filepath.Join(dir, strings.ToLower(k))
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(k, empty)
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// put stores an object as a user's tool does.
func (f *fakeS3) put(t testing.TB, key string, data []byte) {
	t.Helper()
	if _, err := f.client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(f.bucket), Key: aws.String(key), Body: bytes.NewReader(data),
	}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// get returns an object's bytes, nil when it is missing.
func (f *fakeS3) get(t testing.TB, key string) []byte {
	t.Helper()
	out, err := f.client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	if notFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keys lists every key of the bucket.
func (f *fakeS3) keys(t testing.TB) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(f.client, &s3.ListObjectsV2Input{Bucket: aws.String(f.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// openS3TestLog opens the offline log under prefix of f, with a user's
// access to its objects.
func openS3TestLog(t testing.TB, f *fakeS3, prefix string, edit ...func(*S3Config)) *testLog {
	t.Helper()
	cfg := f.config(prefix)
	for _, e := range edit {
		e(&cfg)
	}
	l, err := OpenS3OfflineLog(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := func(rel string) string { return prefix + "/" + rel }
	return &testLog{
		OfflineLog: l, t: t,
		put:   func(rel string, data []byte) { f.put(t, key(rel), data) },
		get:   func(rel string) []byte { return f.get(t, key(rel)) },
		mkdir: func(rel string) { f.put(t, key(rel)+"/", nil) }, // a console's "folder"
	}
}

// archiveRows makes n events of the test view on partition p from offset
// first, spread over the day of day0 + days·1d.
func archiveRows(t testing.TB, v *tiling.View, p int32, first int64, n, days int) []ArchiveRow {
	t.Helper()
	var rows []ArchiveRow
	for i := range int64(n) {
		o := first + i
		ts := day0 + (i%int64(days))*tiling.Day + o*997%tiling.Day
		js := fmt.Sprintf(`{"user_id":"u%d","ts":%d,"amount":%d,"merchant":"m%d","price":%d.5,"tag":"t"}`, o%17, ts, o, o%5, o%9)
		rows = append(rows, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: p, Offset: o})})
	}
	return rows
}

func TestS3OfflineLogHasTheDirectoryLayoutUnderItsPrefix(t *testing.T) {
	v := offlineTestView(t)
	f := newFakeS3(t)
	s3l := openS3TestLog(t, f, "/team/offline/") // slashes trimmed
	dir := openDirTestLog(t)
	if got := s3l.Root(); got != "s3://lake/team/offline" {
		t.Fatalf("Root() = %q", got)
	}
	rows := archiveRows(t, v, 3, 100, 500, 2)
	p1, err := s3l.WriteArchive(v, "", 3, 100, 599, rows)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := dir.WriteArchive(v, "", 3, 100, 599, rows)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"txn/date=2024-03-10/p3-00000000000000000100-00000000000000000599.parquet",
		"txn/date=2024-03-11/p3-00000000000000000100-00000000000000000599.parquet",
	}
	if !slices.Equal(p1, want) || !slices.Equal(p2, want) {
		t.Fatalf("paths %q and %q, want %q", p1, p2, want)
	}
	var wantKeys []string
	for _, p := range want {
		wantKeys = append(wantKeys, "team/offline/"+p)
		if !bytes.Equal(f.get(t, "team/offline/"+p), dir.get(p)) {
			t.Fatalf("%s: the S3 object and the local file differ", p)
		}
	}
	if keys := f.keys(t); !slices.Equal(keys, wantKeys) {
		t.Fatalf("bucket keys %q, want %q (no temp objects, nothing outside the prefix)", keys, wantKeys)
	}
	// A log at the bucket's root and one under another prefix do not see it.
	other := openS3TestLog(t, f, "team/other")
	if days, err := other.Days("txn"); err != nil || days != nil {
		t.Fatalf("another prefix: %v %v", days, err)
	}
	root := openS3TestLog(t, f, "")
	if days, err := root.Days("txn"); err != nil || days != nil {
		t.Fatalf("the bucket's root: %v %v", days, err)
	}
	if days, err := root.Days("team"); err != nil || days != nil {
		t.Fatalf("the prefix as a view: %v %v", days, err)
	}
}

// TestS3ListsPerViewAndPerDay counts the listing requests: Days lists the
// view's prefix in pages of 1,000 keys without a delimiter; ReadDay lists
// its day's prefix with one; ReadFiles lists nothing. No request lists the
// bucket outside the view.
func TestS3ListsPerViewAndPerDay(t *testing.T) {
	v := offlineTestView(t)
	f := newFakeS3(t)
	l := openS3TestLog(t, f, "p")
	// 1,500 tiny user files over 3 days, an archive file, and another view.
	for i := range 1500 {
		l.putString(fmt.Sprintf("txn/%s/f%04d.jsonl", dateDir(day0+int64(i%3)*tiling.Day), i),
			fmt.Sprintf(`{"user_id":"u","ts":%d}`, day0+int64(i%3)*tiling.Day+int64(i)))
	}
	if _, err := l.WriteArchive(v, "", 0, 0, 99, archiveRows(t, v, 0, 0, 100, 1)); err != nil {
		t.Fatal(err)
	}
	l.putString("other/"+dateDir(day0)+"/x.jsonl", "{}")
	f.requests()

	days, err := l.Days("txn")
	if err != nil {
		t.Fatal(err)
	}
	if len(days) != 3 || len(days[0].Files) != 501 {
		t.Fatalf("%d days, the first with %d files", len(days), len(days[0].Files))
	}
	lists := func(reqs []fakeRequest) (prefixes []string) {
		for _, r := range reqs {
			if r.query.Get("list-type") == "2" {
				prefixes = append(prefixes, r.query.Get("prefix")+"|"+r.query.Get("delimiter"))
			} else {
				t.Errorf("a request other than a listing: %s %s", r.method, r.key)
			}
		}
		return prefixes
	}
	if got := lists(f.requests()); !slices.Equal(got, []string{"p/txn/|", "p/txn/|"}) {
		t.Fatalf("Days listed %q; want two pages of p/txn/ without a delimiter", got)
	}

	if _, err := l.ReadFiles(v, "", days[1], func(*tiling.Event) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	gets := 0
	for _, r := range f.requests() {
		if r.method != http.MethodGet || r.key == "" || r.rng != "" {
			t.Fatalf("ReadFiles sent %s %q %v (range %q); want whole-object GETs only", r.method, r.key, r.query, r.rng)
		}
		gets++
	}
	if gets != 500 {
		t.Fatalf("ReadFiles of 500 files sent %d GETs", gets)
	}

	st, err := l.ReadDay(v, "", day0, func(*tiling.Event) error { return nil }, nil)
	if err != nil || st.Files != 501 || st.Events != 600 {
		t.Fatalf("ReadDay: %+v %v", st, err)
	}
	var listed []string
	for _, r := range f.requests() {
		if r.query.Get("list-type") == "2" {
			listed = append(listed, r.query.Get("prefix")+"|"+r.query.Get("delimiter"))
		}
	}
	if want := []string{"p/txn/" + dateDir(day0) + "/|/"}; !slices.Equal(listed, want) {
		t.Fatalf("ReadDay listed %q, want %q", listed, want)
	}
}

// TestS3ReadsLargeFilesByRanges reads a file larger than WholeObjectBytes
// by ranged GETs pinned to its entity tag, through a cache of two blocks,
// and gets what a whole read gets.
func TestS3ReadsLargeFilesByRanges(t *testing.T) {
	v := offlineTestView(t)
	f := newFakeS3(t)
	whole := openS3TestLog(t, f, "x")
	ranged := openS3TestLog(t, f, "x", func(c *S3Config) {
		c.WholeObjectBytes, c.RangeBytes, c.RangeBlocks = 1<<10, 4<<10, 2
	})
	if _, err := whole.WriteArchive(v, "", 1, 0, 2999, archiveRows(t, v, 1, 0, 3000, 1)); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := range 400 {
		lines = append(lines, fmt.Sprintf(`{"user_id":"j%d","ts":%d,"amount":%d,"merchant":"%s"}`, i%7, day0+int64(i), i, strings.Repeat("m", i%50)))
	}
	whole.putString("txn/"+dateDir(day0)+"/big.jsonl", strings.Join(lines, "\n"))
	days, err := whole.Days("txn")
	if err != nil || len(days) != 1 {
		t.Fatal(days, err)
	}
	for _, fi := range days[0].Files {
		if fi.Size < 16<<10 {
			t.Fatalf("%s has %d bytes: too small to need several ranges", fi.Name, fi.Size)
		}
	}
	want, wst, wbad := readAll(t, whole.OfflineLog, v, "", day0)
	f.requests()
	got, gst, gbad := readAll(t, ranged.OfflineLog, v, "", day0)
	if len(wbad)+len(gbad) > 0 || wst != gst || len(got) != 3400 || len(want) != len(got) {
		t.Fatalf("whole: %+v %q; ranged: %+v %q", wst, wbad, gst, gbad)
	}
	for i := range want {
		if d := eventDiff(&got[i], &want[i]); d != "" {
			t.Fatalf("event %d: %s", i, d)
		}
	}
	heads, ranges := 0, 0
	for _, r := range f.requests() {
		switch {
		case r.method == http.MethodHead:
			heads++
		case r.method == http.MethodGet && r.rng != "":
			ranges++
		case r.method == http.MethodGet && r.key == "":
		default:
			t.Errorf("unexpected request %s %s %q", r.method, r.key, r.rng)
		}
	}
	if heads != 2 || ranges < 8 {
		t.Fatalf("%d HEADs and %d ranged GETs for two large files", heads, ranges)
	}
}

// TestS3ObjectReplacedWhileReadFailsTheRead replaces a large user file
// between two ranged GETs of one read: the read fails with an unavailable
// error (the events of the old version read before the swap were already
// passed to fn, so a heal must not be installed from it), reports no file,
// and the day's fingerprint differs from the one sampled before the read,
// so the retried heal reads the day again, new version whole.
func TestS3ObjectReplacedWhileReadFailsTheRead(t *testing.T) {
	v := offlineTestView(t)
	f := newFakeS3(t)
	l := openS3TestLog(t, f, "r", func(c *S3Config) {
		c.WholeObjectBytes, c.RangeBytes, c.RangeBlocks = 1<<10, 2<<10, 1
	})
	dir := "txn/" + dateDir(day0) + "/"
	var a, b []string
	for i := range 300 {
		a = append(a, fmt.Sprintf(`{"user_id":"a","ts":%d,"amount":1}`, day0+int64(i)))
		b = append(b, fmt.Sprintf(`{"user_id":"b","ts":%d,"amount":2}`, day0+int64(i)))
	}
	l.putString(dir+"a.jsonl", strings.Join(a, "\n"))
	l.putString(dir+"b.jsonl", strings.Join(b, "\n"))
	days, err := l.Days("txn")
	if err != nil || len(days) != 1 {
		t.Fatal(days, err)
	}
	before := days[0].Fingerprint()
	// Same size, other bytes: only the entity tag tells (the clock stands still).
	replaced := strings.ReplaceAll(strings.Join(b, "\n"), `"amount":2`, `"amount":3`)
	var once sync.Once
	f.setBeforeObject(func(key string, _ http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(key, "/b.jsonl") && strings.HasPrefix(r.Header.Get("Range"), "bytes=2048-") {
			once.Do(func() { f.put(t, key, []byte(replaced)) })
		}
		return false
	})
	var bad []string
	sum := 0.0
	st, err := l.ReadFiles(v, "", days[0], func(e *tiling.Event) error {
		sum += e.Inputs[0].Num
		return nil
	}, func(file string, row int64, reason string) {
		bad = append(bad, fmt.Sprintf("%s:%d:%s", file, row, reason))
	})
	if err == nil || unavailable(err) == nil || !errors.Is(err, errChanged) || !strings.Contains(err.Error(), "b.jsonl") {
		t.Fatalf("err %v; want b.jsonl's replacement as an unavailable error", err)
	}
	if len(bad) > 0 || st.BadFiles != 0 {
		t.Fatalf("stats %+v, bad %q; want no file reported", st, bad)
	}
	// a.jsonl whole, then part of b's old version: amounts of 2, never 3.
	if st.Events <= 300 || sum != 300+2*float64(st.Events-300) {
		t.Fatalf("events %d, sum of amounts %v", st.Events, sum)
	}
	f.setBeforeObject(nil)
	days, err = l.Days("txn")
	if err != nil {
		t.Fatal(err)
	}
	if days[0].Fingerprint() == before {
		t.Fatal("the day's fingerprint did not change when an object was replaced by another of the same size")
	}
	evs, st, bad := readAll(t, l.OfflineLog, v, "", day0)
	sum = 0
	for _, e := range evs {
		sum += e.Inputs[0].Num
	}
	if len(bad) > 0 || st.Events != 600 || sum != 300+3*300 {
		t.Fatalf("the next read: %+v %q, sum of amounts %v", st, bad, sum)
	}
}

// TestFilesRemovedAfterTheListingFailTheRead: ReadFiles of a listing whose
// file was removed since fails with an unavailable error and reports no
// file — in S3 a 404 for a listed key may as well be a store that does not
// show it yet, or a misrouted endpoint, and skipping it would keep it out
// for as long as the listing stays the same; locally the same rule holds.
// A new listing no longer has the file and reads.
func TestFilesRemovedAfterTheListingFailTheRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) *testLog) {
		v := offlineTestView(t)
		l := open(t)
		dir := "txn/" + dateDir(day0) + "/"
		for _, n := range []string{"a", "b", "c"} {
			l.putString(dir+n+".jsonl", fmt.Sprintf(`{"user_id":%q,"ts":%d}`, n, day0))
		}
		days, err := l.Days("txn")
		if err != nil || len(days) != 1 || len(days[0].Files) != 3 {
			t.Fatal(days, err)
		}
		if err := l.Remove([]string{dir + "b.jsonl"}); err != nil {
			t.Fatal(err)
		}
		noBad := func(file string, row int64, reason string) { t.Errorf("bad %s:%d:%s", file, row, reason) }
		var keys []string
		collect := func(e *tiling.Event) error {
			keys = append(keys, e.Key)
			return nil
		}
		_, err = l.ReadFiles(v, "", days[0], collect, noBad)
		if err == nil || unavailable(err) == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "b.jsonl") {
			t.Fatalf("err %v; want b.jsonl missing as an unavailable error", err)
		}
		if days, err = l.Days("txn"); err != nil || len(days) != 1 {
			t.Fatal(days, err)
		}
		keys = nil
		st, err := l.ReadFiles(v, "", days[0], collect, noBad)
		if err != nil || st.Files != 2 || !slices.Equal(keys, []string{"a", "c"}) {
			t.Fatalf("a new listing: %+v %v %q", st, err, keys)
		}
	})
}

// TestLocalFilesThatCannotBeReadFailTheRead: locally too, a listed file
// that cannot be opened (a symbolic link to itself) or read (a directory
// by the same name) fails the read with an unavailable error rather than
// being reported and skipped: fixing it would not change the day's
// fingerprint, so a skipped file would stay out of the batch data.
func TestLocalFilesThatCannotBeReadFailTheRead(t *testing.T) {
	v := offlineTestView(t)
	for _, c := range []struct {
		name  string
		spoil func(path string) error
	}{
		{"cannot be opened", func(p string) error { return os.Symlink(filepath.Base(p), p) }},
		{"cannot be read", func(p string) error { return os.Mkdir(p, 0o755) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := openDirTestLog(t)
			dir := "txn/" + dateDir(day0) + "/"
			for _, n := range []string{"a", "b", "c"} {
				l.putString(dir+n+".jsonl", fmt.Sprintf(`{"user_id":%q,"ts":%d}`, n, day0))
			}
			days, err := l.Days("txn")
			if err != nil || len(days) != 1 || len(days[0].Files) != 3 {
				t.Fatal(days, err)
			}
			b := filepath.Join(l.Root(), filepath.FromSlash(dir+"b.jsonl"))
			if err := os.Remove(b); err != nil {
				t.Fatal(err)
			}
			if err := c.spoil(b); err != nil {
				t.Fatal(err)
			}
			var bad []string
			_, err = l.ReadFiles(v, "", days[0], func(*tiling.Event) error { return nil }, func(file string, row int64, reason string) {
				bad = append(bad, fmt.Sprintf("%s:%d:%s", file, row, reason))
			})
			if err == nil || unavailable(err) == nil || !strings.Contains(err.Error(), "b.jsonl") || len(bad) > 0 {
				t.Fatalf("err %v, bad %q; want the read failed on b.jsonl", err, bad)
			}
		})
	}
}

// TestReadAheadGivesTheSameEventsAndStopsEarly reads a day of many files
// with several read-ahead depths (the same events in the same order), and
// stops on fn's error with downloads in flight; either way every file
// opened is closed once by the time ReadDay returns.
func TestReadAheadGivesTheSameEventsAndStopsEarly(t *testing.T) {
	v := offlineTestView(t)
	f := newFakeS3(t)
	base := openS3TestLog(t, f, "ra")
	for p := range int32(12) {
		if _, err := base.WriteArchive(v, "", p, 0, 199, archiveRows(t, v, p, 0, 200, 1)); err != nil {
			t.Fatal(err)
		}
	}
	base.putString("txn/"+dateDir(day0)+"/zz.jsonl", fmt.Sprintf("{\"user_id\":\"z\",\"ts\":%d}\nnot json\n", day0))
	var ref []tiling.Pos
	for _, ahead := range []int{0, 1, 3, 20} {
		l := openS3TestLog(t, f, "ra", func(c *S3Config) { c.ReadAhead = ahead })
		files := &countingStorage{offlineStorage: l.store}
		l.store = files
		var got []tiling.Pos
		st, err := l.ReadDay(v, "", day0, func(e *tiling.Event) error {
			got = append(got, e.Pos)
			return nil
		}, nil)
		if err != nil || st.Files != 13 || st.Events != 2401 || st.BadRows != 1 {
			t.Fatalf("read-ahead %d: %+v %v", ahead, st, err)
		}
		if n := files.check(t); n != 13 {
			t.Fatalf("read-ahead %d: %d files opened for 13", ahead, n)
		}
		if ref == nil {
			ref = got
		} else if !slices.Equal(got, ref) {
			t.Fatalf("read-ahead %d: another order of events", ahead)
		}
		stop := errors.New("stop")
		n := 0
		_, err = l.ReadDay(v, "", day0, func(*tiling.Event) error {
			if n++; n == 450 {
				return stop
			}
			return nil
		}, nil)
		if err != stop {
			t.Fatalf("read-ahead %d: err %v, want fn's", ahead, err)
		}
		if n := files.check(t); n < 3 || n > 3+ahead {
			t.Fatalf("read-ahead %d: %d files opened to stop in the third", ahead, n)
		}
	}
}

// countingStorage records the files opened through it, to check that each
// is closed.
type countingStorage struct {
	offlineStorage
	mu    sync.Mutex
	files []*countedFile
}

type countedFile struct {
	offlineFile
	path   string
	closes atomic.Int32
}

func (c *countedFile) Close() error {
	c.closes.Add(1)
	return c.offlineFile.Close()
}

func (s *countingStorage) open(ctx context.Context, path string, sizeHint int64) (offlineFile, error) {
	f, err := s.offlineStorage.open(ctx, path, sizeHint)
	if err != nil {
		return nil, err
	}
	cf := &countedFile{offlineFile: f, path: path}
	s.mu.Lock()
	s.files = append(s.files, cf)
	s.mu.Unlock()
	return cf, nil
}

// check fails t unless every file opened since the last check was closed
// exactly once, and returns how many were opened.
func (s *countingStorage) check(t *testing.T) int {
	t.Helper()
	s.mu.Lock()
	files := s.files
	s.files = nil
	s.mu.Unlock()
	for _, f := range files {
		if n := f.closes.Load(); n != 1 {
			t.Errorf("%s closed %d times", f.path, n)
		}
	}
	return len(files)
}

// TestS3TestsIgnoreTheMachinesAWSSettings: a test's fake S3 is found and
// read whatever the machine's AWS settings say.
func TestS3TestsIgnoreTheMachinesAWSSettings(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(conf, []byte("[default]\nmax_attempts = 1\nendpoint_url = http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", conf)
	t.Setenv("AWS_PROFILE", "a-profile-nowhere") // fails LoadDefaultConfig when seen
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
	v := offlineTestView(t)
	f := newFakeS3(t)
	l := openS3TestLog(t, f, "env")
	l.putString("txn/"+dateDir(day0)+"/a.jsonl", fmt.Sprintf(`{"user_id":"a","ts":%d}`, day0))
	if _, st, bad := readAll(t, l.OfflineLog, v, "", day0); st.Events != 1 || len(bad) > 0 {
		t.Fatalf("%+v %q", st, bad)
	}
}

func TestOpenS3OfflineLogChecksTheBucketAndConfig(t *testing.T) {
	f := newFakeS3(t)
	cfg := f.config("p")
	cfg.Bucket = "missing"
	if _, err := OpenS3OfflineLog(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a missing bucket: %v", err)
	}
	bad := DefaultS3Config()
	bad.Endpoint, bad.RequestTimeout, bad.RangeBlocks = "ftp://x", 0, 0
	err := bad.Validate()
	for _, want := range []string{"bucket is required", "endpoint", "request timeout", "range blocks"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to mention %q", err, want)
		}
	}
	if _, err := OpenS3OfflineLog(context.Background(), bad); err == nil {
		t.Fatal("an invalid config opened")
	}
}

// TestS3StorageMissingObjects: a missing object opens as fs.ErrNotExist
// (whole or ranged), and removing one is not an error.
func TestS3StorageMissingObjects(t *testing.T) {
	f := newFakeS3(t)
	l := openS3TestLog(t, f, "m")
	st := l.store
	for _, hint := range []int64{-1, 10, 1 << 40} {
		if _, err := st.open(context.Background(), "txn/x.parquet", hint); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("open with size hint %d: %v, want fs.ErrNotExist", hint, err)
		}
	}
	if _, err := st.listDir(context.Background(), "txn/"+dateDir(day0)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("listDir of a missing day: %v", err)
	}
	if err := l.Remove([]string{"txn/" + dateDir(day0) + "/gone.parquet"}); err != nil {
		t.Fatal(err)
	}
}

// s3Error answers a request as S3 does when it fails.
func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message></Error>`, code)
}

// TestS3FailuresOfTheStorageFailTheRead: every failure to get a listed
// object's bytes, on a whole or a ranged read, fails ReadDay with an
// unavailable error, to be retried, and reports no file (a skipped file
// would stay out of the batch data while the day's listing stays the
// same): a 5xx, throttling, a connection cut in the middle of a body, a
// refusal (403 AccessDenied, InvalidObjectState, SignatureDoesNotMatch,
// 400 ExpiredToken), a 404 for a listed key, a 412, a checksum that does
// not match, a ranged GET answered without its range. The SDK's retries
// ride out a single server error, and a right checksum reads.
func TestS3FailuresOfTheStorageFailTheRead(t *testing.T) {
	v := offlineTestView(t)
	f := newFakeS3(t)
	seed := openS3TestLog(t, f, "fail")
	dir := "txn/" + dateDir(day0) + "/"
	for _, n := range []string{"a", "b", "c"} {
		var lines []string
		for i := range 200 {
			lines = append(lines, fmt.Sprintf(`{"user_id":%q,"ts":%d,"amount":1}`, n, day0+int64(i)))
		}
		seed.putString(dir+n+".jsonl", strings.Join(lines, "\n"))
	}
	type answer func(key string, w http.ResponseWriter, r *http.Request) bool
	// requested is the range a ranged GET asks for.
	requested := func(r *http.Request) (start, end int64) {
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err != nil {
			t.Errorf("range %q: %v", r.Header.Get("Range"), err)
		}
		return start, end
	}
	cut := func(key string, w http.ResponseWriter, r *http.Request) bool {
		size := len(f.object(t, key))
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return true
		}
		head := fmt.Sprintf("HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: %d\r\n", size)
		if etag := r.Header.Get("If-Match"); etag != "" { // the pinned block of a ranged read
			start, end := requested(r)
			head = fmt.Sprintf("HTTP/1.1 206 Partial Content\r\nETag: %s\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n",
				etag, start, end, size, end-start+1)
		}
		buf.WriteString(head + "\r\n{\"user_id\":")
		buf.Flush()
		conn.Close()
		return true
	}
	status := func(code int, s3code string) answer {
		return func(_ string, w http.ResponseWriter, _ *http.Request) bool {
			s3Error(w, code, s3code)
			return true
		}
	}
	// checksum answers a whole GET with the object and the CRC32 of its
	// bytes, or of other bytes.
	checksum := func(right bool) answer {
		return func(key string, w http.ResponseWriter, _ *http.Request) bool {
			data := f.object(t, key)
			summed := data
			if !right {
				summed = append(bytes.Clone(data), '!')
			}
			crc := binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(summed))
			w.Header().Set("ETag", `"x"`)
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Header().Set("x-amz-checksum-crc32", base64.StdEncoding.EncodeToString(crc))
			w.Write(data)
			return true
		}
	}
	// A proxy that drops the Range header: the server answers 200 with the
	// whole object.
	rangeIgnored := func(_ string, _ http.ResponseWriter, r *http.Request) bool {
		r.Header.Del("Range")
		return false
	}
	// partial answers a ranged GET with 206 and the bytes of the range one
	// byte on from the one asked for, saying so in its Content-Range
	// (honest), or the bytes asked for without a Content-Range.
	partial := func(honest bool) answer {
		return func(key string, w http.ResponseWriter, r *http.Request) bool {
			data := f.object(t, key)
			start, end := requested(r)
			if honest {
				start, end = start+1, end+1
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
			}
			w.Header().Set("ETag", r.Header.Get("If-Match"))
			w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[start : end+1])
			return true
		}
	}
	const always = 1 << 30
	cases := []struct {
		name     string
		attempts int
		ranged   bool // read by ranges (the first block is served)
		head     bool // answer the HEAD of a ranged read, not a GET
		failures int  // answers replaced, then the server's own
		answer   answer
		fails    bool // the read fails; else every event is read
	}{
		{"a server error", 1, false, false, always, status(http.StatusInternalServerError, "InternalError"), true},
		{"throttling", 1, false, false, always, status(http.StatusServiceUnavailable, "SlowDown"), true},
		{"a connection cut mid-body", 1, false, false, always, cut, true},
		{"a server error on a ranged read", 1, true, false, always, status(http.StatusInternalServerError, "InternalError"), true},
		{"a connection cut mid-range", 1, true, false, always, cut, true},
		{"one server error, retried", 2, false, false, 1, status(http.StatusInternalServerError, "InternalError"), false},
		{"an object refused", 1, false, false, always, status(http.StatusForbidden, "AccessDenied"), true},
		{"an archived object", 1, false, false, always, status(http.StatusForbidden, "InvalidObjectState"), true},
		{"a signature refused", 1, false, false, always, status(http.StatusForbidden, "SignatureDoesNotMatch"), true},
		{"an expired token", 1, false, false, always, status(http.StatusBadRequest, "ExpiredToken"), true},
		{"a listed object not found", 1, false, false, always, status(http.StatusNotFound, "NoSuchKey"), true},
		{"an object refused on a ranged read", 1, true, false, always, status(http.StatusForbidden, "AccessDenied"), true},
		{"the HEAD of a ranged read refused", 1, true, true, always, status(http.StatusForbidden, "AccessDenied"), true},
		{"the HEAD of a listed object not found", 1, true, true, always, status(http.StatusNotFound, "NoSuchKey"), true},
		{"a ranged read's entity tag no longer matches", 1, true, false, always, status(http.StatusPreconditionFailed, "PreconditionFailed"), true},
		{"a ranged object gone", 1, true, false, always, status(http.StatusNotFound, "NoSuchKey"), true},
		{"a wrong checksum", 1, false, false, always, checksum(false), true},
		{"the right checksum", 1, false, false, always, checksum(true), false},
		{"a Range ignored", 1, true, false, always, rangeIgnored, true},
		{"another range", 1, true, false, always, partial(true), true},
		{"no Content-Range", 1, true, false, always, partial(false), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := openS3TestLog(t, f, "fail", func(cfg *S3Config) {
				cfg.MaxAttempts = c.attempts
				if c.ranged {
					cfg.WholeObjectBytes, cfg.RangeBytes = 1<<10, 2<<10
				}
			})
			var mu sync.Mutex
			left := c.failures
			f.setBeforeObject(func(key string, w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				if !strings.HasSuffix(key, "/b.jsonl") || left == 0 || (r.Method == http.MethodHead) != c.head {
					return false
				}
				if c.ranged && !c.head && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
					return false // a ranged read fails after its first block
				}
				left--
				return c.answer(key, w, r)
			})
			defer f.setBeforeObject(nil)
			var bad []string
			keys := map[string]int{}
			st, err := l.ReadDay(v, "", day0, func(e *tiling.Event) error {
				keys[e.Key]++
				return nil
			}, func(file string, row int64, reason string) {
				bad = append(bad, fmt.Sprintf("%s:%d:%s", file, row, reason))
			})
			if c.fails {
				if err == nil || unavailable(err) == nil || !strings.Contains(err.Error(), "b.jsonl") {
					t.Fatalf("err %v (bad %q, events %v); want the failure reading b.jsonl, unavailable", err, bad, keys)
				}
				if len(bad) > 0 || keys["c"] != 0 || keys["a"] != 200 {
					t.Fatalf("bad %q, events %v before the failure", bad, keys)
				}
				t.Logf("%v", err)
				return
			}
			if err != nil || len(bad) > 0 || st.Events != 600 || st.BadFiles != 0 {
				t.Fatalf("%+v %v %q: want every event", st, err, bad)
			}
		})
	}
}
