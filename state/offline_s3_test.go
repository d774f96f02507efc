package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
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
// beforeGet, when set, runs before each object GET is served, and answers
// it instead when it returns true.
type fakeS3 struct {
	url, bucket string
	backend     *s3mem.Backend
	client      *s3.Client // the test's own, as a user's tool

	mu struct {
		sync.Mutex
		requests  []fakeRequest
		beforeGet func(key string, w http.ResponseWriter, r *http.Request) bool
		latency   time.Duration // added to every request (benchmarks)
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
	clock := gofakes3.FixedTimeSource(time.Date(2024, 3, 12, 8, 0, 0, 0, time.UTC))
	f := &fakeS3{bucket: "lake", backend: s3mem.New(s3mem.WithTimeSource(clock))}
	faker := gofakes3.New(f.backend, gofakes3.WithTimeSource(clock), gofakes3.WithTimeSkewLimit(0), gofakes3.WithLogger(gofakes3.DiscardLog()))
	h := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		f.mu.Lock()
		f.mu.requests = append(f.mu.requests, fakeRequest{r.Method, key, r.URL.Query(), r.Header.Get("Range")})
		hook, latency := f.mu.beforeGet, f.mu.latency
		f.mu.Unlock()
		time.Sleep(latency)
		if hook != nil && r.Method == http.MethodGet && bucket == f.bucket && key != "" && hook(key, w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
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

func (f *fakeS3) setBeforeGet(fn func(key string, w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.mu.beforeGet = fn
	f.mu.Unlock()
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

// TestS3ObjectReplacedWhileReadIsReportedAndChangesTheFingerprint replaces
// a large user file between two ranged GETs of one read: the read reports
// the file (it never mixes two versions), the other files are read, and the
// day's fingerprint differs from the one sampled before the read, so the
// next heal reads the day again.
func TestS3ObjectReplacedWhileReadIsReportedAndChangesTheFingerprint(t *testing.T) {
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
	f.setBeforeGet(func(key string, _ http.ResponseWriter, r *http.Request) bool {
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
	if err != nil {
		t.Fatal(err)
	}
	if st.BadFiles != 1 || len(bad) != 1 || !strings.HasPrefix(bad[0], "b.jsonl:-1:") || !strings.Contains(bad[0], errChanged.Error()) {
		t.Fatalf("stats %+v, bad %q; want b.jsonl reported as replaced while being read", st, bad)
	}
	// a.jsonl whole, and the part of b read before the replacement: amounts
	// of 2, never 3.
	if st.Events < 300 || sum != 300+2*float64(st.Events-300) {
		t.Fatalf("events %d, sum of amounts %v", st.Events, sum)
	}
	f.setBeforeGet(nil)
	days, err = l.Days("txn")
	if err != nil {
		t.Fatal(err)
	}
	if days[0].Fingerprint() == before {
		t.Fatal("the day's fingerprint did not change when an object was replaced by another of the same size")
	}
	_, st, bad = readAll(t, l.OfflineLog, v, "", day0)
	if len(bad) > 0 || st.Events != 600 {
		t.Fatalf("the next read: %+v %q", st, bad)
	}
}

// TestFilesRemovedAfterTheListingAreSkipped: ReadFiles of a listing whose
// file was removed since reads the others and does not count it.
func TestFilesRemovedAfterTheListingAreSkipped(t *testing.T) {
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
		var keys []string
		st, err := l.ReadFiles(v, "", days[0], func(e *tiling.Event) error {
			keys = append(keys, e.Key)
			return nil
		}, func(file string, row int64, reason string) { t.Errorf("bad %s:%d:%s", file, row, reason) })
		if err != nil || st.Files != 2 || !slices.Equal(keys, []string{"a", "c"}) {
			t.Fatalf("%+v %v %q", st, err, keys)
		}
	})
}

// TestReadAheadGivesTheSameEventsAndStopsEarly reads a day of many files
// with several read-ahead depths (the same events in the same order), and
// stops on fn's error with downloads in flight.
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
		var got []tiling.Pos
		st, err := l.ReadDay(v, "", day0, func(e *tiling.Event) error {
			got = append(got, e.Pos)
			return nil
		}, nil)
		if err != nil || st.Files != 13 || st.Events != 2401 || st.BadRows != 1 {
			t.Fatalf("read-ahead %d: %+v %v", ahead, st, err)
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

// TestS3FailuresOfTheStorageFailTheRead: a failure of the storage (a 5xx,
// throttling, a connection cut in the middle of a body, on a whole or a
// ranged read) fails ReadDay with an error to retry on, and reports no
// file as unreadable (a skipped file would stay out of the batch data);
// the SDK's retries ride out a single failure; a refusal of one object
// (403) makes that file unreadable, reported and skipped, like a local
// file without read permission.
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
	type answer func(w http.ResponseWriter, r *http.Request) bool
	cut := func(w http.ResponseWriter, r *http.Request) bool {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return true
		}
		head := "HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: 5000\r\n"
		if etag := r.Header.Get("If-Match"); etag != "" { // the pinned block of a ranged read
			head = "HTTP/1.1 206 Partial Content\r\nETag: " + etag + "\r\nContent-Length: 2048\r\n"
		}
		buf.WriteString(head + "\r\n{\"user_id\":")
		buf.Flush()
		conn.Close()
		return true
	}
	status := func(code int, s3code string) answer {
		return func(w http.ResponseWriter, r *http.Request) bool {
			s3Error(w, code, s3code)
			return true
		}
	}
	cases := []struct {
		name     string
		attempts int
		ranged   bool
		failures int // answers replaced, then the server's own
		answer   answer
		fails    bool // the read fails; else b is reported unreadable
	}{
		{"a server error", 1, false, 1 << 30, status(http.StatusInternalServerError, "InternalError"), true},
		{"throttling", 1, false, 1 << 30, status(http.StatusServiceUnavailable, "SlowDown"), true},
		{"a connection cut mid-body", 1, false, 1 << 30, cut, true},
		{"a server error on a ranged read", 1, true, 1 << 30, status(http.StatusInternalServerError, "InternalError"), true},
		{"a connection cut mid-range", 1, true, 1 << 30, cut, true},
		{"one server error, retried", 2, false, 1, status(http.StatusInternalServerError, "InternalError"), false},
		{"an object refused", 1, false, 1 << 30, status(http.StatusForbidden, "AccessDenied"), false},
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
			f.setBeforeGet(func(key string, w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				// A ranged read fails after its first block.
				if !strings.HasSuffix(key, "/b.jsonl") || left == 0 || (c.ranged && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-")) {
					return false
				}
				left--
				return c.answer(w, r)
			})
			defer f.setBeforeGet(nil)
			var bad []string
			keys := map[string]int{}
			st, err := l.ReadDay(v, "", day0, func(e *tiling.Event) error {
				keys[e.Key]++
				return nil
			}, func(file string, row int64, reason string) {
				bad = append(bad, fmt.Sprintf("%s:%d:%s", file, row, reason))
			})
			switch {
			case c.fails:
				if err == nil || unavailable(err) == nil || !strings.Contains(err.Error(), "b.jsonl") {
					t.Fatalf("err %v; want the storage's failure reading b.jsonl", err)
				}
				if len(bad) > 0 || keys["c"] != 0 || keys["a"] != 200 {
					t.Fatalf("bad %q, events %v before the failure", bad, keys)
				}
			case c.failures == 1:
				if err != nil || len(bad) > 0 || st.Events != 600 {
					t.Fatalf("%+v %v %q: want every event after a retry", st, err, bad)
				}
			default:
				if err != nil || len(bad) != 1 || !strings.HasPrefix(bad[0], "b.jsonl:-1:open:") || st.Events != 400 || st.BadFiles != 1 {
					t.Fatalf("%+v %v %q: want b.jsonl reported and skipped", st, err, bad)
				}
			}
		})
	}
}
