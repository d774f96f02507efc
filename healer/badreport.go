package healer

import (
	"sort"
	"strings"
	"sync"
)

// maxBadFilesLogged bounds the files a heal's summary of malformed rows
// names one by one.
const maxBadFilesLogged = 100

// badReport counts and logs the malformed offline-log files and rows of one
// heal. A file that cannot be read at all is logged every time; malformed
// rows are logged at a bounded rate as they come (logBad), then once per
// file with their count when the heal's reads are done (summarize), so
// that every file with a skipped row is named.
type badReport struct {
	h     *Healer
	view  string
	mu    sync.Mutex
	files map[string]*badRows
	// unreadable holds the files counted under bad_file: a file is
	// counted once however many of its parts fail (its row groups).
	unreadable map[string]bool
}

// badRows is what a file's malformed rows were.
type badRows struct {
	n     int64
	first string // the first one's reason
}

func newBadReport(h *Healer, view string) *badReport {
	return &badReport{h: h, view: view, files: map[string]*badRows{}, unreadable: map[string]bool{}}
}

// add reports a malformed row of file (row < 0: the whole file). It is
// called from the build goroutines.
func (b *badReport) add(file string, row int64, reason string) {
	if row < 0 {
		// The message names the file (and with S3 the request): the
		// label stays one fixed value, the log has it. Every failing
		// part is logged (a row group: the file's other parts were read).
		b.mu.Lock()
		first := !b.unreadable[file]
		b.unreadable[file] = true
		b.mu.Unlock()
		if first {
			b.h.m.badRows.WithLabelValues(b.view, "bad_file").Inc()
		}
		b.h.log.Warn("malformed offline-log file skipped", "view", b.view, "file", file, "reason", reason)
		return
	}
	b.h.m.badRows.WithLabelValues(b.view, reason).Inc()
	b.mu.Lock()
	f := b.files[file]
	if f == nil {
		f = &badRows{first: reason}
		b.files[file] = f
	}
	f.n++
	b.mu.Unlock()
	b.h.logBad.Do(func() {
		b.h.log.Warn("malformed offline-log row skipped", "view", b.view, "file", file, rowAttr(file), row, "reason", reason)
	})
}

// rowAttr names a row's position in file: the line of a JSON Lines file
// (from 1), else the Parquet row (from 0).
func rowAttr(file string) string {
	if strings.HasSuffix(file, ".jsonl") {
		return "line"
	}
	return "row"
}

// summarize logs every file with malformed rows once, with their count,
// in name order.
func (b *badReport) summarize() {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, 0, len(b.files))
	for name := range b.files {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		if i == maxBadFilesLogged {
			b.h.log.Warn("more offline-log files have malformed rows", "view", b.view, "files", len(names)-i)
			return
		}
		f := b.files[name]
		b.h.log.Warn("offline-log file has malformed rows, skipped", "view", b.view, "file", name, "rows", f.n, "first_reason", f.first)
	}
}
