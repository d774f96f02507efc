package state

// The offline log in S3 (or an S3-compatible store): the same tree as the
// local directory, as object keys under a prefix,
//
//	<prefix>/<view>/date=YYYY-MM-DD/<file>
//
// so that every instance of a deployment, and any tool that reads Parquet
// from S3, sees one log.
//
// Writes: an archive file is built in memory and stored with one PutObject,
// which S3 makes visible whole or not at all; a retried roll writes the same
// bytes to the same key. There are no temp objects.
//
// Listing: Days lists the view's prefix (one request per 1,000 objects, not
// per day); ReadDay without a listing lists the day's prefix with the "/"
// delimiter. Nothing lists the whole bucket.
//
// Reads: a file up to WholeObjectBytes is downloaded with one GET into
// memory, ReadAhead files ahead of the one being decoded, and its body read
// to its end, so that the SDK checks the checksum S3 sends with it; a larger
// one is read by ranged GETs of RangeBytes, pinned to the entity tag its
// HEAD returned (If-Match, and checked on every answer), so a Parquet footer
// and its pages always come from the same object. Every ranged answer must
// be a 206 whose Content-Range is the range asked for: a server or proxy
// that ignores Range answers 200 with the whole object, which read as a
// block would be other bytes.
//
// Failures: a file is skipped (and reported) only for what its bytes say —
// not Parquet, a corrupt row group, bad rows — which a fix changes, and
// with it the day's fingerprint. Any failure to get a listed file's bytes
// fails the whole day read, to be retried: a heal that skipped the file
// would be installed without it, and the day's unchanged listing would
// never bring it back. Those failures are: a failure of S3 itself after the
// SDK's retries (5xx, throttling, timeouts, a connection cut mid-body); a
// checksum that does not match; a refusal (403 AccessDenied,
// InvalidObjectState of an archived object, SignatureDoesNotMatch or
// ExpiredToken while credentials rotate: every 4xx); a 404 for a file the
// listing returned (removed since — the next listing no longer has it — or
// not visible yet through an eventually consistent store or a misrouted
// endpoint); an object replaced between two ranged GETs (412, or another
// entity tag: events of the old version may already have been passed on);
// a ranged GET answered without its range.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Config locates an offline log in S3.
type S3Config struct {
	// Bucket holds the log. Required.
	Bucket string
	// Prefix is the key prefix of the log's root, without leading or
	// trailing slashes (they are trimmed). Default "": the bucket's root.
	Prefix string
	// Region of the bucket. Default "": AWS_REGION or the shared config,
	// else us-east-1.
	Region string
	// Endpoint is the http:// or https:// URL of an S3-compatible server.
	// Default "": AWS.
	Endpoint string
	// PathStyle addresses objects as <endpoint>/<bucket>/<key> rather than
	// <bucket>.<endpoint>/<key>; most S3-compatible servers need it.
	// Default false.
	PathStyle bool
	// Credentials sign the requests. Default nil: the SDK's standard chain
	// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the shared config and
	// credentials files with AWS_PROFILE, SSO, web identity, ECS and EC2
	// instance roles).
	Credentials aws.CredentialsProvider
	// HTTPClient sends the requests. Default nil: the SDK's.
	HTTPClient *http.Client
	// MaxAttempts is the number of attempts of a request that fails for
	// the storage's sake (5xx, throttling, network errors), with the SDK's
	// jittered exponential backoff between them. Default 0: the SDK's (3).
	MaxAttempts int
	// RequestTimeout bounds each request (one page of a listing, one GET,
	// one PutObject). Default 2m.
	RequestTimeout time.Duration
	// WholeObjectBytes: files up to this size are read with one GET into
	// memory. Default 32 MiB.
	WholeObjectBytes int64
	// RangeBytes is the size of the ranged GETs that read larger files, and
	// RangeBlocks how many of those blocks a file keeps in memory (least
	// recently used dropped first). Defaults 8 MiB and 8.
	RangeBytes  int64
	RangeBlocks int
	// ReadAhead is how many files a day read downloads beyond the one it
	// decodes, concurrently. Memory: up to (ReadAhead + 1) ×
	// WholeObjectBytes. Default 2.
	ReadAhead int
}

// DefaultS3Config returns the defaults; Bucket is left to set.
func DefaultS3Config() S3Config {
	return S3Config{
		RequestTimeout:   2 * time.Minute,
		WholeObjectBytes: 32 << 20,
		RangeBytes:       8 << 20,
		RangeBlocks:      8,
		ReadAhead:        2,
	}
}

// Validate reports every problem of c at once.
func (c S3Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("offline log s3: "+format, args...)) }
	if c.Bucket == "" {
		add("bucket is required")
	} else if strings.ContainsAny(c.Bucket, "/ ") {
		add("bucket %q is not a bucket name", c.Bucket)
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("endpoint %q: want an http:// or https:// URL", c.Endpoint)
		}
	}
	if c.RequestTimeout <= 0 {
		add("request timeout must be positive, got %s", c.RequestTimeout)
	}
	if c.WholeObjectBytes < 0 {
		add("whole-object bytes must not be negative, got %d", c.WholeObjectBytes)
	}
	if c.RangeBytes < 1<<10 {
		add("range bytes must be at least 1 KiB, got %d", c.RangeBytes)
	}
	if c.RangeBlocks < 1 {
		add("range blocks must be at least 1, got %d", c.RangeBlocks)
	}
	if c.MaxAttempts < 0 {
		add("max attempts must not be negative, got %d", c.MaxAttempts)
	}
	if c.ReadAhead < 0 {
		add("read-ahead must not be negative, got %d", c.ReadAhead)
	}
	return errors.Join(errs...)
}

// OpenS3OfflineLog opens the offline log under cfg's bucket and prefix. It
// checks that the bucket answers (HeadBucket) so that a wrong bucket,
// region, endpoint or credentials fail at start, not at the first roll.
func OpenS3OfflineLog(ctx context.Context, cfg S3Config) (*OfflineLog, error) {
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.Credentials != nil {
		opts = append(opts, awsconfig.WithCredentialsProvider(cfg.Credentials))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, awsconfig.WithHTTPClient(cfg.HTTPClient))
	}
	if cfg.MaxAttempts > 0 {
		opts = append(opts, awsconfig.WithRetryMaxAttempts(cfg.MaxAttempts))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("offline log s3: load AWS config: %w", err)
	}
	if ac.Region == "" {
		ac.Region = "us-east-1"
	}
	client := s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Objects that users upload without a checksum are read all the
		// time: not worth a log line each.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	st := &s3Storage{api: client, cfg: cfg}
	hctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	if _, err := client.HeadBucket(hctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, fmt.Errorf("offline log s3: bucket %s: %w", cfg.Bucket, err)
	}
	root := "s3://" + cfg.Bucket
	if cfg.Prefix != "" {
		root += "/" + cfg.Prefix
	}
	return &OfflineLog{root: root, store: st, ahead: cfg.ReadAhead}, nil
}

// s3API is the part of the S3 client the offline log calls.
type s3API interface {
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// s3Storage is the offline log's files as objects under a key prefix.
type s3Storage struct {
	api s3API
	cfg S3Config
}

// key is the object key of a path of the log.
func (s *s3Storage) key(path string) string {
	if s.cfg.Prefix == "" {
		return path
	}
	return s.cfg.Prefix + "/" + path
}

// notFound reports whether err is S3's answer for a missing object.
func notFound(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// readError classifies an error of a request for the object at key: a 404
// is an fs.ErrNotExist (the reader decides what a missing file means), or
// errChanged when pinned to an entity tag (the object read was removed); a
// 412 is errChanged. Everything else, and errChanged, is an unavailable
// error: the object cannot be read now, whatever the reason (5xx,
// throttling, timeouts, network errors, a 403 or another refusal).
func (s *s3Storage) readError(key string, err error, pinned bool) error {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			if !pinned {
				return fmt.Errorf("s3://%s/%s: %w: %w", s.cfg.Bucket, key, fs.ErrNotExist, err)
			}
			fallthrough
		case http.StatusPreconditionFailed:
			return &unavailableError{fmt.Errorf("s3://%s/%s: %w: %w", s.cfg.Bucket, key, errChanged, err)}
		}
	}
	return &unavailableError{fmt.Errorf("s3://%s/%s: %w", s.cfg.Bucket, key, err)}
}

// list pages through the objects under prefix (a key ending in "/"),
// calling fn with each key relative to prefix; with delim, keys below a
// further "/" are rolled up and fn sees each such level once, as
// "<sub>/".
func (s *s3Storage) list(ctx context.Context, prefix string, delim bool, fn func(rel string, size int64, mod time.Time, etag string)) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(prefix)}
	if delim {
		in.Delimiter = aws.String("/")
	}
	p := s3.NewListObjectsV2Paginator(s.api, in)
	for p.HasMorePages() {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		page, err := p.NextPage(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("list s3://%s/%s: %w", s.cfg.Bucket, prefix, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			fn(key[len(prefix):], aws.ToInt64(o.Size), aws.ToTime(o.LastModified), aws.ToString(o.ETag))
		}
		for _, cp := range page.CommonPrefixes {
			if key := aws.ToString(cp.Prefix); strings.HasPrefix(key, prefix) {
				fn(key[len(prefix):], 0, time.Time{}, "")
			}
		}
	}
	return nil
}

func fileInfo(name string, size int64, mod time.Time, etag string) FileInfo {
	fi := FileInfo{Name: name, Size: size, ETag: etag}
	if !mod.IsZero() {
		fi.ModTime = mod.UnixNano()
	}
	return fi
}

func sortFiles(files []FileInfo) {
	slices.SortFunc(files, func(a, b FileInfo) int { return strings.Compare(a.Name, b.Name) })
}

func (s *s3Storage) listTree(ctx context.Context, dir string, keep func(string) bool) (map[string][]FileInfo, error) {
	out := map[string][]FileInfo{}
	err := s.list(ctx, s.key(dir)+"/", false, func(rel string, size int64, mod time.Time, etag string) {
		sub, name, ok := strings.Cut(rel, "/")
		if !ok || sub == "" || !keep(sub) {
			return // a file directly in dir, or not a wanted subdirectory
		}
		files := out[sub]
		if name != "" && !strings.Contains(name, "/") {
			files = append(files, fileInfo(name, size, mod, etag))
		}
		out[sub] = files // a deeper key or a "sub/" marker: sub exists
	})
	if err != nil {
		return nil, err
	}
	for _, files := range out {
		sortFiles(files)
	}
	return out, nil
}

func (s *s3Storage) listDir(ctx context.Context, dir string) ([]FileInfo, error) {
	var files []FileInfo
	exists := false
	err := s.list(ctx, s.key(dir)+"/", true, func(rel string, size int64, mod time.Time, etag string) {
		exists = true
		if rel != "" && !strings.Contains(rel, "/") {
			files = append(files, fileInfo(rel, size, mod, etag))
		}
	})
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("s3://%s/%s: %w", s.cfg.Bucket, s.key(dir), fs.ErrNotExist)
	}
	sortFiles(files)
	return files, nil
}

// errChanged: an object was replaced (or removed) while it was read.
var errChanged = errors.New("replaced while being read")

func (s *s3Storage) open(ctx context.Context, path string, sizeHint int64) (offlineFile, error) {
	key := s.key(path)
	if sizeHint < 0 || sizeHint <= s.cfg.WholeObjectBytes {
		f, err := s.download(ctx, key)
		if err == nil || !errors.Is(err, errTooBig) {
			return f, err
		}
	}
	return s.openRanged(ctx, key)
}

// errTooBig: an object listed as small is now over WholeObjectBytes.
var errTooBig = errors.New("larger than a whole-object read")

// download reads a whole object into memory.
func (s *s3Storage) download(ctx context.Context, key string) (offlineFile, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	// Checksum mode on, whatever the SDK's configuration says
	// (AWS_RESPONSE_CHECKSUM_VALIDATION): S3 sends the object's checksum and
	// the SDK checks it when the body is read to its end.
	out, err := s.api.GetObject(rctx, &s3.GetObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), ChecksumMode: s3types.ChecksumModeEnabled,
	})
	if err != nil {
		return nil, s.readError(key, err, false)
	}
	defer out.Body.Close()
	n := aws.ToInt64(out.ContentLength)
	if n > s.cfg.WholeObjectBytes {
		return nil, errTooBig
	}
	var b []byte
	if n > 0 {
		b = make([]byte, n)
		err = readBody(out.Body, b)
	} else { // no length: read to the end, or just past the limit
		b, err = io.ReadAll(io.LimitReader(out.Body, s.cfg.WholeObjectBytes+1))
	}
	if err != nil { // cut in the middle of the body, or a wrong checksum
		return nil, &unavailableError{fmt.Errorf("get s3://%s/%s: %w", s.cfg.Bucket, key, err)}
	}
	if int64(len(b)) > s.cfg.WholeObjectBytes {
		return nil, errTooBig
	}
	return memFile{bytes.NewReader(b)}, nil
}

// readBody fills b from body, and then reads to the body's end: the SDK
// checks a response's checksum only when its body returns io.EOF, which
// io.ReadFull of the Content-Length bytes never sees. An error on that
// last read (a checksum that does not match) or bytes after b are errors.
func readBody(body io.Reader, b []byte) error {
	if _, err := io.ReadFull(body, b); err != nil {
		return err
	}
	var one [1]byte
	switch n, err := body.Read(one[:]); {
	case n == 0 && err == io.EOF:
		return nil
	case err != nil && err != io.EOF:
		return err
	}
	return fmt.Errorf("the body does not end after its %d bytes", len(b))
}

// memFile is a file downloaded whole.
type memFile struct{ *bytes.Reader }

func (memFile) Close() error { return nil }

// openRanged opens a large object for ranged reads pinned to its current
// entity tag.
func (s *s3Storage) openRanged(ctx context.Context, key string) (offlineFile, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	h, err := s.api.HeadObject(rctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, s.readError(key, err, false)
	}
	return &rangeFile{s: s, key: key, etag: aws.ToString(h.ETag), size: aws.ToInt64(h.ContentLength)}, nil
}

// rangeFile reads an object by ranged GETs of RangeBytes, keeping the last
// RangeBlocks blocks it used.
type rangeFile struct {
	s         *s3Storage
	key, etag string
	size      int64

	mu struct {
		sync.Mutex
		blocks []cachedBlock // most recently used last
	}
}

type cachedBlock struct {
	i    int64
	data []byte
}

func (f *rangeFile) Size() int64  { return f.size }
func (f *rangeFile) Close() error { f.mu.Lock(); f.mu.blocks = nil; f.mu.Unlock(); return nil }

func (f *rangeFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("s3://%s/%s: negative offset %d", f.s.cfg.Bucket, f.key, off)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	bs := f.s.cfg.RangeBytes
	for n < len(p) && off < f.size {
		b, err := f.block(off / bs)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], b[off%bs:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// block returns block i, from the cache or S3.
func (f *rangeFile) block(i int64) ([]byte, error) {
	bl := f.mu.blocks
	for j := len(bl) - 1; j >= 0; j-- {
		if bl[j].i == i {
			c := bl[j]
			f.mu.blocks = append(slices.Delete(bl, j, j+1), c)
			return c.data, nil
		}
	}
	bs := f.s.cfg.RangeBytes
	start := i * bs
	end := min(start+bs, f.size) - 1
	ctx, cancel := context.WithTimeout(context.Background(), f.s.cfg.RequestTimeout)
	defer cancel()
	in := &s3.GetObjectInput{
		Bucket: aws.String(f.s.cfg.Bucket), Key: aws.String(f.key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
	}
	if f.etag != "" {
		in.IfMatch = aws.String(f.etag)
	}
	out, err := f.s.api.GetObject(ctx, in)
	if err != nil {
		return nil, f.s.readError(f.key, err, true)
	}
	defer out.Body.Close()
	if et := aws.ToString(out.ETag); et != "" && f.etag != "" && et != f.etag {
		return nil, &unavailableError{fmt.Errorf("s3://%s/%s: %w", f.s.cfg.Bucket, f.key, errChanged)}
	}
	if err := checkRange(out, start, end, f.size); err != nil {
		return nil, &unavailableError{fmt.Errorf("get s3://%s/%s %s: %w", f.s.cfg.Bucket, f.key, *in.Range, err)}
	}
	data := make([]byte, end-start+1)
	if _, err := io.ReadFull(out.Body, data); err != nil {
		return nil, &unavailableError{fmt.Errorf("get s3://%s/%s %s: %w", f.s.cfg.Bucket, f.key, *in.Range, err)}
	}
	if len(f.mu.blocks) >= f.s.cfg.RangeBlocks {
		f.mu.blocks = slices.Delete(f.mu.blocks, 0, 1)
	}
	f.mu.blocks = append(f.mu.blocks, cachedBlock{i, data})
	return data, nil
}

// checkRange checks that a ranged GET was answered with the range asked
// for: a 206 with Content-Range "bytes start-end/size". A server or proxy
// that ignores Range answers 200 with the whole object.
func checkRange(out *s3.GetObjectOutput, start, end, size int64) error {
	status := 0
	if r, ok := awsmiddleware.GetRawResponse(out.ResultMetadata).(*smithyhttp.Response); ok {
		status = r.StatusCode
	}
	if status != http.StatusPartialContent {
		return fmt.Errorf("answered with status %d, not 206 Partial Content", status)
	}
	if got, want := aws.ToString(out.ContentRange), fmt.Sprintf("bytes %d-%d/%d", start, end, size); got != want {
		return fmt.Errorf("answered with Content-Range %q, want %q", got, want)
	}
	return nil
}

func (s *s3Storage) write(ctx context.Context, path string, fn func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := fn(&buf); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	// A seekable body: the SDK signs and checksums it without chunked
	// uploads, which S3-compatible servers handle unevenly.
	_, err := s.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(s.key(path)),
		Body:          bytes.NewReader(buf.Bytes()),
		ContentLength: aws.Int64(int64(buf.Len())),
		ContentType:   aws.String(contentType(path)),
	})
	if err != nil {
		return fmt.Errorf("put s3://%s/%s: %w", s.cfg.Bucket, s.key(path), err)
	}
	return nil
}

func contentType(path string) string {
	switch classify(path[strings.LastIndexByte(path, '/')+1:]) {
	case fileParquet:
		return "application/vnd.apache.parquet"
	case fileJSONL:
		return "application/jsonl"
	}
	return "application/octet-stream"
}

func (s *s3Storage) remove(ctx context.Context, paths []string) error {
	for _, p := range paths {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		_, err := s.api.DeleteObject(rctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(p))})
		cancel()
		if err != nil && !notFound(err) {
			return fmt.Errorf("delete s3://%s/%s: %w", s.cfg.Bucket, s.key(p), err)
		}
	}
	return nil
}
