package main

// End-to-end test of the offline log in S3: the service with
// offline_log.path s3://… against an S3-compatible server in the test
// process (gofakes3, path-style, credentials from the environment as the
// SDK's standard chain finds them), ingesting from kfake and healing from
// the bucket; every served value is compared with the oracle.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/tilestream/tilestream/healer"
)

// e2eS3 is an S3 server in the test process with one bucket, and a client
// to it that plays the user dropping files in.
type e2eS3 struct {
	url, bucket string
	client      *s3.Client
}

const (
	e2eS3Bucket = "lake"
	e2eS3Prefix = "tilestream/offline"
)

// startS3 starts gofakes3 in memory behind httptest, creates the bucket,
// and points the AWS SDK's standard chain at static credentials in the
// environment (and away from any shared config or instance metadata of the
// machine).
func startS3(t *testing.T) *e2eS3 {
	t.Helper()
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(srv.Close)
	if err := backend.CreateBucket(e2eS3Bucket); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "tilestream-test", "AWS_SECRET_ACCESS_KEY": "tilestream-secret", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
	} {
		t.Setenv(k, v)
	}
	return &e2eS3{url: srv.URL, bucket: e2eS3Bucket, client: s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("user", "user", ""),
	})}
}

// put stores an object whole.
func (s *e2eS3) put(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := s.client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Body: bytes.NewReader(data),
	}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// keys lists the bucket.
func (s *e2eS3) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)})
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

// get returns an object's bytes.
func (s *e2eS3) get(t *testing.T, key string) []byte {
	t.Helper()
	out, err := s.client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
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

// dayKey is the key of a file of the test view's date of ts.
func dayKey(ts int64, name string) string {
	return e2eS3Prefix + "/" + testView + "/date=" + time.UnixMilli(ts).UTC().Format("2006-01-02") + "/" + name
}

// writeS3Config writes the env's healing config with the offline log in
// the bucket and returns its path.
func (e *env) writeS3Config(t *testing.T, s *e2eS3, name string, hs healSettings) string {
	t.Helper()
	path := e.writeHealConfig(t, name, hs)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("offline_log: {path: %q, roll_interval: 300ms}\n", e.offlineRoot())
	if strings.Count(string(b), local) != 1 {
		t.Fatalf("the harness config no longer has exactly one %q:\n%s", local, b)
	}
	c := strings.Replace(string(b), local, fmt.Sprintf(
		"offline_log:\n  path: s3://%s/%s/\n  roll_interval: 300ms\n  s3: {region: us-east-1, endpoint: %q, path_style: true}\n",
		s.bucket, e2eS3Prefix, s.url), 1)
	if err := os.WriteFile(path, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// dropCorrections writes the corrections into the bucket as one JSON Lines
// object per date, named name, with extra lines per key, and returns the
// keys written.
func (s *e2eS3) dropCorrections(t *testing.T, name string, cs []correction, extra map[string][]string) []string {
	t.Helper()
	byKey := map[string][]string{}
	for _, c := range cs {
		k := dayKey(c.ev.ts, name)
		byKey[k] = append(byKey[k], c.line)
	}
	for k, lines := range extra {
		byKey[k] = append(byKey[k], lines...)
	}
	for k, lines := range byKey {
		s.put(t, k, []byte(strings.Join(lines, "\n")+"\n"))
	}
	return slices.Sorted(func(yield func(string) bool) {
		for k := range byKey {
			if !yield(k) {
				return
			}
		}
	})
}

// archiveKey matches an archive file's key: the local layout under the
// prefix, p<partition>-<first>-<last>.parquet with 20-digit offsets.
var archiveKey = regexp.MustCompile(`^` + e2eS3Prefix + `/txn/date=\d{4}-\d\d-\d\d/p([0-7])-\d{20}-\d{20}\.parquet$`)

// TestS3OfflineLogEndToEnd runs the service with the offline log in S3:
//
//  1. 6,000 events over 8 days (and boundary times, malformed records) are
//     ingested and archived into the bucket; POST /v1/heal heals from it and
//     every key equals the oracle. The bucket holds archive files only,
//     under the prefix, named as in a local directory; nothing is written
//     locally.
//  2. Corrections dropped into the bucket as JSON Lines objects (with a
//     malformed line) and an unreadable Parquet object: `tilestream heal`
//     through the running service counts the corrections, reports the bad
//     line and object, and every key equals the oracle over both.
//  3. With the service stopped, one correction object is replaced in place
//     by other events (a changed fingerprint): a standalone `tilestream
//     heal` re-reads that day from the bucket, and the restarted service
//     serves the oracle over the new corrections, the replaced ones gone.
func TestS3OfflineLogEndToEnd(t *testing.T) {
	start := time.Now()
	s := startS3(t)
	e := newEnv(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := newGen(seed, e)
	rng := rand.New(rand.NewPCG(seed, 47))
	const lateness = 5 * testGran
	cfg := e.writeS3Config(t, s, "s3.yaml", healSettings{lateness: "5m"})
	ov := oracleView(e.lifetimeStart)

	// Phase 1.
	keys := g.keys(80)
	evs := append(g.regular(keys, 6000), g.boundary(keys[:20], 3, 3)...)
	bad, edge := g.malformed(2, keys)
	evs = append(append(evs, bad...), edge...)
	g.shuffle(evs)
	p := startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := e.produce(ctx, evs, rng, 2000); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(time.Minute, p.alive)
	events := byKey(t, evs)

	res1 := e.healNow(t, lateness)
	w1 := res1.Watermark.UnixMilli()
	must := 0
	for _, ev := range evs {
		if ev.reason == "" && ev.ts >= e.lifetimeStart && ev.ts < w1 {
			must++
		}
	}
	if !res1.Installed || res1.Files == 0 || res1.Events < int64(must) {
		t.Fatalf("the first heal: %+v; want installed, with at least the %d accepted events in [lifetime_start, W_b)", res1, must)
	}
	if res1.BadRows != 0 || res1.BadFiles != 0 || res1.Duplicates != 0 {
		t.Errorf("the first heal found bad rows, bad files or duplicates in the archive: %+v", res1)
	}
	gets := keys[len(keys)-3:]
	results := e.queryAll(t, keys, gets)
	if n := checkOracle(t, ov, results, events); n == 0 {
		t.Logf("after a heal from S3 every value of %d results equals the oracle", len(results))
	}
	checkBatchWatermarks(t, results, events, e.lifetimeStart, w1)

	parts := map[string]bool{}
	archived := s.keys(t)
	for _, k := range archived {
		m := archiveKey.FindStringSubmatch(k)
		if m == nil {
			t.Fatalf("bucket key %q is not an archive file under %s/", k, e2eS3Prefix)
		}
		parts[m[1]] = true
	}
	if len(parts) != testPartitions {
		t.Errorf("archive files of %d partitions in the bucket, want %d: %q", len(parts), testPartitions, archived)
	}
	if _, err := os.Stat(e.offlineRoot()); !os.IsNotExist(err) {
		t.Errorf("a local offline log directory exists: %v", err)
	}
	t.Logf("phase 1: %d records, %d archive objects, heal %+v", len(evs), len(archived), res1)

	// Phase 2.
	used := usedTimes(evs)
	cs := g.corrections(keys[:15], 40, e.now-6*testDay, e.now-testDay, used, "s3fix")
	badLine := `{"user_id":"u00001","ts":`
	written := s.dropCorrections(t, "corrections.jsonl", cs, map[string][]string{dayKey(cs[0].ev.ts, "corrections.jsonl"): {badLine}})
	s.put(t, dayKey(cs[0].ev.ts, "junk.parquet"), []byte("PAR1 not parquet PAR1"))
	heal := func(stage string) healer.Result {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(ctx, []string{"heal", "--config", cfg}, os.Getenv, &stdout, &stderr); err != nil {
			t.Fatalf("%s: tilestream heal: %v\n%s", stage, err, stderr.String())
		}
		res := decodeHealResults(t, stdout.Bytes())[0]
		t.Logf("%s: %+v", stage, res)
		return res
	}
	res2 := heal("through the service")
	if !res2.Installed || res2.BadRows != 1 || res2.BadFiles != 1 {
		t.Errorf("the heal after the corrections: %+v; want installed, 1 bad row (the cut line), 1 bad file (junk.parquet)", res2)
	}
	all := merge(events, correctionEvents(t, cs))
	results = e.queryAll(t, keys, gets)
	if n := checkOracle(t, ov, results, all); n == 0 {
		t.Logf("after a heal with corrections in %d objects every value equals the oracle", len(written))
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v after cancel", err)
	}

	// Phase 3: replace the objects of one date in place.
	day := utcDay(cs[0].ev.ts)
	lo, hi := max(day, e.now-6*testDay), min(day+testDay, e.now-testDay)
	var kept []correction
	for _, c := range cs {
		if utcDay(c.ev.ts) != day {
			kept = append(kept, c)
		}
	}
	cs2 := g.corrections(keys[15:30], 25, lo, hi, used, "s3fix2")
	replacedKey := dayKey(cs[0].ev.ts, "corrections.jsonl")
	before := s.get(t, replacedKey)
	s.dropCorrections(t, "corrections.jsonl", cs2, nil)
	if bytes.Equal(before, s.get(t, replacedKey)) {
		t.Fatal("the object was not replaced")
	}
	res3 := heal("standalone")
	if !res3.Installed || res3.DaysHealed == 0 || res3.BadFiles != 1 || res3.BadRows != 0 {
		t.Errorf("the standalone heal: %+v; want installed, days healed, junk.parquet reported again and no bad row", res3)
	}
	final := merge(events, correctionEvents(t, kept), correctionEvents(t, cs2))
	p = startInProcess(t, cfg)
	e.waitReady(60*time.Second, p.alive)
	results = e.queryAll(t, keys, gets)
	if n := checkOracle(t, ov, results, final); n == 0 {
		t.Logf("after a standalone heal of a replaced object every value equals the oracle")
	}
	checkBatchWatermarks(t, results, final, e.lifetimeStart, res3.Watermark.UnixMilli())
	if err := p.stop(t); err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// utcDay is the UTC midnight of the day holding ts.
func utcDay(ts int64) int64 { return alignDown(ts, testDay) }
