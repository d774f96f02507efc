package state

// The offline log: the durable record of every event, as files under a local
// directory or an S3 key prefix (offline_s3.go), one tree per view:
//
//	<root>/<view>/date=YYYY-MM-DD/<file>
//
// where the date is the event date in UTC. Three kinds of files live there:
//
//   - archive files, written by ingest through WriteArchive and named
//     p<partition>-<first offset>-<last offset>.parquet (offsets zero-padded to
//     20 digits): the events of one partition handled in [first, last] whose
//     event time falls on that date (schema in offline_archive.go and
//     docs/format.md);
//   - other *.parquet files that users drop in (history, corrections,
//     backfills), with the view's columns;
//   - *.jsonl files that users drop in: one event object per line, exactly as
//     on the Kafka topic.
//
// Names starting with '.' or '_' (temp files, markers such as _SUCCESS) and
// every other name are ignored. Files are replaced whole (a rename locally,
// one PutObject in S3), so a reader sees a file whole or not at all.
//
// A day is read as a set: ReadDay deduplicates its events by identity and
// reports malformed rows and files it cannot decode without failing; a
// failure to get a listed file's bytes (an I/O error, a file gone since the
// listing, any S3 error) fails the read, to be retried. The healer notices
// which days changed with DayFiles.Fingerprint.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tilestream/tilestream/tiling"
)

// OfflineLog is the offline log under a local directory or an S3 key
// prefix. It is safe for concurrent use by one writer per (view, partition)
// and any number of readers, in one process or several sharing the
// directory or bucket.
type OfflineLog struct {
	root  string // the directory, or s3://bucket/prefix
	store offlineStorage
	// ahead is how many files a day read opens beyond the one it decodes.
	ahead int
}

// OpenOfflineLog opens the offline log rooted at the local directory root,
// creating the directory if needed.
func OpenOfflineLog(root string) (*OfflineLog, error) {
	if root == "" {
		return nil, errors.New("offline log: path is required")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("open offline log: %w", err)
	}
	return &OfflineLog{root: root, store: &dirStorage{root: root}}, nil
}

// Root returns the directory of the log, or its s3://bucket/prefix URL.
func (l *OfflineLog) Root() string { return l.root }

// ArchiveRow is one consumed event to archive.
type ArchiveRow struct {
	// Event is the decoded event: Key, TS, Pos (partition, offset) and the
	// Inputs in View.Columns() order, with Raw set for the columns whose
	// View.ColumnRaw is true.
	Event tiling.Event
	// EventID is the value of the view's event_id field as text ("" when the
	// view has none or the event lacks it): a JSON string's unescaped text, a
	// JSON number's literal, as the decoder sets tiling.Event.ID. ReadDay
	// takes the ids of JSON Lines files the same way.
	EventID string
}

// FileInfo describes one file of a date directory.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime int64 // Unix nanoseconds (S3: the object's Last-Modified)
	// ETag is the S3 object's entity tag, which changes when the object is
	// replaced by other bytes even within the second of Last-Modified; ""
	// for local files.
	ETag string
}

// DayFiles lists one date directory of a view.
type DayFiles struct {
	// Date is the day's UTC midnight, epoch ms.
	Date int64
	// Files are the day's offline-log files (ignored names excluded), by name.
	Files []FileInfo
}

// Fingerprint hashes the day's file names, sizes, modification times and
// (S3) entity tags, so it changes when a file is added, removed, resized or
// rewritten. Local files hash as they did before S3 existed, so an upgrade
// re-heals nothing. A healer
// should keep the fingerprint it took from Days before it read the day: a
// file changed during the read then shows as a changed day next time.
func (d DayFiles) Fingerprint() uint64 {
	h := fnv.New64a()
	var b []byte
	b = strconv.AppendInt(b, d.Date, 10)
	for _, f := range d.Files {
		b = append(b, 0)
		b = append(b, f.Name...)
		b = append(b, 0)
		b = strconv.AppendInt(b, f.Size, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, f.ModTime, 10)
		if f.ETag != "" {
			b = append(b, ' ')
			b = append(b, f.ETag...)
		}
	}
	h.Write(b)
	return h.Sum64()
}

// ReadStats counts what a read saw.
type ReadStats struct {
	// Files read (unreadable ones included) and their total size in bytes.
	Files, Bytes int64
	// Rows seen (lines for JSON Lines, blank lines excepted); Events passed
	// to fn; Duplicates dropped by identity; BadRows reported and skipped.
	Rows, Events, Duplicates, BadRows int64
	// BadFiles reported wholly or partly unreadable (a corrupt row group).
	BadFiles int64
}

// Add adds o to s.
func (s *ReadStats) Add(o ReadStats) {
	s.Files += o.Files
	s.Bytes += o.Bytes
	s.Rows += o.Rows
	s.Events += o.Events
	s.Duplicates += o.Duplicates
	s.BadRows += o.BadRows
	s.BadFiles += o.BadFiles
}

// Reasons a row of an offline-log file is skipped, besides the decoder's
// (tiling.Reasons), which apply to offline rows alike.
const (
	// ReasonOutsideDate: the event time is not on its directory's date.
	ReasonOutsideDate = "outside_date"
	// ReasonBadPosition: an archive row's _partition or _offset is null or
	// outside the partition and offset range its file name declares.
	ReasonBadPosition = "bad_position"
)

// fileKind classifies a name in a date directory.
type fileKind uint8

const (
	fileIgnored fileKind = iota
	fileParquet
	fileJSONL
)

func classify(name string) fileKind {
	if name == "" || name[0] == '.' || name[0] == '_' {
		return fileIgnored
	}
	switch {
	case strings.HasSuffix(name, ".parquet") && len(name) > len(".parquet"):
		return fileParquet
	case strings.HasSuffix(name, ".jsonl") && len(name) > len(".jsonl"):
		return fileJSONL
	}
	return fileIgnored
}

// archiveName is the file name of an archive file.
func archiveName(partition int32, first, last int64) string {
	return fmt.Sprintf("p%d-%020d-%020d.parquet", partition, first, last)
}

// parseArchiveName parses a canonical archive file name (exactly as
// archiveName writes it, so the files of one partition sort together and by
// first offset).
func parseArchiveName(name string) (partition int32, first, last int64, ok bool) {
	rest, found := strings.CutPrefix(name, "p")
	if !found {
		return 0, 0, 0, false
	}
	rest, found = strings.CutSuffix(rest, ".parquet")
	if !found {
		return 0, 0, 0, false
	}
	ps, rest, found := strings.Cut(rest, "-")
	if !found || len(rest) != 20+1+20 || rest[20] != '-' {
		return 0, 0, 0, false
	}
	p, err := strconv.ParseInt(ps, 10, 32)
	if err != nil || p < 0 || strconv.FormatInt(p, 10) != ps {
		return 0, 0, 0, false
	}
	f, err1 := parseDigits(rest[:20])
	t, err2 := parseDigits(rest[21:])
	if err1 != nil || err2 != nil || f > t {
		return 0, 0, 0, false
	}
	return int32(p), f, t, true
}

func parseDigits(s string) (int64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// Dates. A date directory is named date=YYYY-MM-DD after the proleptic
// Gregorian calendar in UTC. Years outside 0000…9999 (event times up to
// ±2^53 ms are valid) are written with a sign or more digits, as ISO 8601
// expanded years, so every day has exactly one name.

// dayOf returns the UTC midnight (ms) of the day holding t.
func dayOf(t int64) int64 { return tiling.AlignDown(t, tiling.Day) }

// civil converts days since 1970-01-01 to a date (H. Hinnant's algorithm).
func civil(z int64) (y int64, m, d int) {
	z += 719468
	era := z
	if era < 0 {
		era -= 146096
	}
	era /= 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		m = int(mp + 3)
	} else {
		m = int(mp - 9)
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

// daysFromCivil is the inverse of civil.
func daysFromCivil(y int64, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mm := int64(m)
	if mm > 2 {
		mm -= 3
	} else {
		mm += 9
	}
	doy := (153*mm+2)/5 + int64(d) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// dateDir returns the directory name of the day starting at date (ms).
func dateDir(date int64) string {
	y, m, d := civil(date / tiling.Day)
	var b []byte
	b = append(b, "date="...)
	if y < 0 {
		b = append(b, '-')
		y = -y
	}
	ys := strconv.FormatInt(y, 10)
	for i := len(ys); i < 4; i++ {
		b = append(b, '0')
	}
	b = append(b, ys...)
	b = append(b, '-', byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10))
	return string(b)
}

// parseDateDir parses a directory name written by dateDir.
func parseDateDir(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, "date=")
	if !ok || len(s) < 10 {
		return 0, false
	}
	ys, md := s[:len(s)-6], s[len(s)-6:]
	if md[0] != '-' || md[3] != '-' {
		return 0, false
	}
	neg := strings.HasPrefix(ys, "-")
	digits := strings.TrimPrefix(ys, "-")
	if len(digits) < 4 || len(digits) > 9 {
		return 0, false
	}
	y, err := parseDigits(digits)
	m, err1 := parseDigits(md[1:3])
	d, err2 := parseDigits(md[4:6])
	if err != nil || err1 != nil || err2 != nil || m < 1 || m > 12 || d < 1 || d > 31 {
		return 0, false
	}
	if neg {
		y = -y
	}
	date := daysFromCivil(y, int(m), int(d)) * tiling.Day
	if dateDir(date) != name { // 31 February, "-0000", leading zeros
		return 0, false
	}
	return date, true
}

// checkViewName rejects view names that are not a single safe path element.
func checkViewName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) || name[0] == '.' {
		return fmt.Errorf("offline log: view name %q is not a valid directory name", name)
	}
	return nil
}

// Days lists the date directories of a view, ascending, with their files
// (ignored names excluded). A view without a directory has no days. In S3
// it is one listing of the view's prefix (a page per 1,000 objects).
func (l *OfflineLog) Days(view string) ([]DayFiles, error) {
	if err := checkViewName(view); err != nil {
		return nil, err
	}
	tree, err := l.store.listTree(context.Background(), view, func(sub string) bool {
		_, ok := parseDateDir(sub)
		return ok
	})
	if err != nil {
		return nil, fmt.Errorf("list offline log of %s: %w", view, err)
	}
	days := make([]DayFiles, 0, len(tree))
	for sub, files := range tree {
		date, _ := parseDateDir(sub)
		days = append(days, DayFiles{Date: date, Files: logFiles(files)})
	}
	if len(days) == 0 {
		return nil, nil
	}
	slices.SortFunc(days, func(a, b DayFiles) int { return cmp.Compare(a.Date, b.Date) })
	return days, nil
}

// logFiles keeps the offline-log files of a directory listing (by name).
func logFiles(files []FileInfo) []FileInfo {
	var out []FileInfo
	for _, f := range files {
		if classify(f.Name) != fileIgnored {
			out = append(out, f)
		}
	}
	return out
}

// listDay lists the offline-log files of one date directory, by name; an
// error wrapping fs.ErrNotExist when the directory does not exist.
func (l *OfflineLog) listDay(ctx context.Context, dir string) ([]FileInfo, error) {
	files, err := l.store.listDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	return logFiles(files), nil
}

// Remove deletes files given by paths relative to the root (as WriteArchive
// returns them); missing files are not an error. Locally the directories
// that held them are synced.
func (l *OfflineLog) Remove(paths []string) error {
	rels := make([]string, 0, len(paths))
	for _, p := range paths {
		if !filepath.IsLocal(p) {
			return fmt.Errorf("offline log: remove %q: not a path inside the log", p)
		}
		rels = append(rels, path.Clean(filepath.ToSlash(p)))
	}
	if err := l.store.remove(context.Background(), rels); err != nil {
		return fmt.Errorf("offline log: remove: %w", err)
	}
	return nil
}

// userPartition is the Pos.Partition given to the rows of a user file: a
// negative number derived from the file name, so that last() orders rows of
// user files deterministically and never like Kafka positions.
func userPartition(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return -1 - int32(h.Sum32()&0x3fffffff)
}
