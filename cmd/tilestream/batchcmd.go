package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/serving"
	"github.com/tilestream/tilestream/state"
)

// loadSettings reads a config file, or gives the built-in one for "".
func loadSettings(path string) (*settings, error) {
	if path == "" {
		return demoConfig(), nil
	}
	return loadConfig(path)
}

// lockedHint is what a standalone command says when the store is locked by
// another process (lockHints: by command).
const lockedHint = "the store is locked by another process: is the service running? stop it first, or use POST /v1/heal"

// lockHints says, by command, what to do when the store is locked.
var lockHints = map[string]string{
	"heal":     lockedHint,
	"backfill": lockedHint,
	// verify only reads, but it needs the store all the same.
	"verify": "the store is locked by another process: is the service running? verify reads the store itself: " +
		"stop the service first, or run verify where the store is not locked (on DynamoDB: with another store.path, the local cache's directory)",
}

// storeLocked reports whether err is the refusal of a store's directory
// lock: a Pebble store (or a DynamoDB store's local cache) admits one
// process at a time.
func storeLocked(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

// openStandalone opens the store and offline log of a config for command
// cmd (heal, backfill, verify), which runs without the service (the Pebble
// store admits one process).
func openStandalone(ctx context.Context, cmd string, s *settings, stderr io.Writer) (*state.Store, *healer.Healer, error) {
	log := newLogger(s, stderr)
	store, err := openStore(ctx, s, prometheus.NewRegistry(), log)
	if err != nil {
		if storeLocked(err) {
			return nil, nil, fmt.Errorf("%w (%s)", err, lockHints[cmd])
		}
		return nil, nil, err
	}
	layouts, err := checkStandaloneLayouts(ctx, s, store, log)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	offline, err := openOfflineLog(s)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	hl, err := newHealer(s, store, offline, nil, prometheus.NewRegistry(), log)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	hl.OnInstall = layouts.installed
	return store, hl, nil
}

func parseDate(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	for _, layout := range []string{"2006-01-02", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UnixMilli(), nil
		}
	}
	return 0, fmt.Errorf("bad date %q: want YYYY-MM-DD or RFC 3339", s)
}

// runBackfill builds every key's batch records of a view from the offline
// log alone: a full heal, resumable (an interrupted backfill continues from
// the days it wrote), with progress on the terminal.
func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backfill", stderr)
	path := fs.String("config", "", "config file (YAML)")
	view := fs.String("view", "", "the view to backfill (required)")
	from := fs.String("from", "", "first date to read (YYYY-MM-DD; default: all history)")
	to := fs.String("to", "", "the batch watermark to reach at most (YYYY-MM-DD or RFC 3339; default: what the offline log holds)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *view == "" {
		return errors.New("backfill: --view is required")
	}
	f, err := parseDate(*from)
	if err != nil {
		return err
	}
	t, err := parseDate(*to)
	if err != nil {
		return err
	}
	s, err := loadSettings(*path)
	if err != nil {
		return err
	}
	store, hl, err := openStandalone(ctx, "backfill", s, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	progress := newBackfillProgress(stderr)
	res, err := hl.Heal(ctx, *view, healer.Options{Full: true, From: f, To: t, Progress: progress.report})
	progress.done(err)
	if err != nil {
		return fmt.Errorf("backfill %s: %w (run it again to resume)", *view, err)
	}
	out, _ := json.Marshal(map[string]any{"result": res,
		"writes": map[string]any{"records": res.Records, "per_tile_writes": res.Tiles}})
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// backfillProgress reports a backfill's progress on w: a bar on a
// terminal, else a plain line at most every 5 s and at the end.
//
// Rate and ETA count only the work of this run, measured from the first
// day it wrote (not from the start, which includes listing the offline log
// and, after an interruption, reading back the days already written). A
// resumed run (days written before the interruption: healer.Progress counts
// them in Days and their bytes in BytesTotal, but they are not read again)
// counts its progress in the days it writes, since the bytes they will read
// are not known; a fresh run counts bytes. At the end the totals are what
// this run read and wrote.
type backfillProgress struct {
	w   io.Writer
	tty bool
	now func() time.Time
	bar *progressbar.ProgressBar

	built      int       // days written by this run: one report each
	resumed    int       // days written before an interruption, at the first report
	first      time.Time // when the first day of this run was written
	firstBytes int64     // and the bytes read by then
	last       healer.Progress
	lastLine   time.Time
	ended      bool // the final line is written
}

// newBackfillProgress reports on w, with a bar when w is a terminal.
func newBackfillProgress(w io.Writer) *backfillProgress {
	f, ok := w.(*os.File)
	return &backfillProgress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), now: time.Now}
}

// report is the healer's Progress callback: one day span was written.
func (b *backfillProgress) report(p healer.Progress) {
	b.built++
	b.last = p
	if b.built == 1 {
		b.first, b.firstBytes, b.resumed = b.now(), p.Bytes, p.Days-1
	}
	b.show(p.Days >= p.DaysTotal)
}

// done ends the report once the heal returned (err: its error): the bar's
// line ends, and a plain report gets its final line if it has not yet.
func (b *backfillProgress) done(err error) {
	if b.built == 0 {
		return
	}
	if err == nil && !b.ended {
		b.show(true)
	}
	if b.bar != nil && !b.bar.IsFinished() {
		_ = b.bar.Exit() // its completion ends the line
	}
}

// measure returns how much of this run is done and its total, in bytes for
// a fresh run and days for a resumed one, and the estimated time left
// (negative: not known yet).
func (b *backfillProgress) measure(final bool) (done, total int64, eta time.Duration) {
	p := b.last
	elapsed := b.now().Sub(b.first)
	if b.resumed == 0 {
		done, total = p.Bytes, p.BytesTotal
		eta = -1
		if d := done - b.firstBytes; d > 0 && elapsed > 0 {
			eta = time.Duration(float64(elapsed) * float64(max(total-done, 0)) / float64(d))
		}
	} else {
		done, total = int64(b.built), int64(p.DaysTotal-b.resumed)
		eta = -1
		if b.built > 1 && elapsed > 0 {
			eta = time.Duration(float64(elapsed) * float64(max(total-done, 0)) / float64(b.built-1))
		}
	}
	if final {
		// Days written before the interruption were not read: what this
		// run read is its total.
		total, eta = done, 0
	}
	return done, max(total, done), eta
}

func (b *backfillProgress) show(final bool) {
	p := b.last
	done, total, eta := b.measure(final)
	left := "?"
	if eta >= 0 {
		left = eta.Round(time.Second).String()
	}
	// On a terminal the bar shows the bytes or the days done (read).
	days := fmt.Sprintf("day %d/%d", p.Days, p.DaysTotal)
	read := fmt.Sprintf("%d/%d bytes", done, total)
	if b.resumed > 0 {
		days = fmt.Sprintf("day %d/%d of this run (%d of %d days were written before the interruption)", done, total, b.resumed, p.DaysTotal)
		read = fmt.Sprintf("%d bytes", p.Bytes)
	}
	counts := fmt.Sprintf("%d events, %d keys, eta %s", p.Events, p.Keys, left)
	if !b.tty {
		if t := b.now(); final || t.Sub(b.lastLine) >= 5*time.Second {
			b.lastLine = t
			b.ended = final
			fmt.Fprintf(b.w, "backfill: %s, %s, %s\n", days, read, counts)
		}
		return
	}
	if b.bar == nil {
		b.bar = progressbar.NewOptions64(max(total, 1), progressbar.OptionSetWriter(b.w),
			progressbar.OptionShowBytes(b.resumed == 0), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(false), progressbar.OptionSetElapsedTime(true),
			// The bar ends its own line: the next output starts on a new one.
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }))
	}
	b.bar.ChangeMax64(max(total, 1))
	if b.resumed > 0 {
		days = fmt.Sprintf("day %d/%d (resumed: %d of %d days done before)", done, total, b.resumed, p.DaysTotal)
	}
	b.bar.Describe("backfill: " + days + ", " + counts)
	_ = b.bar.Set64(done)
	b.ended = final
	if final && !b.bar.IsFinished() {
		_ = b.bar.Finish()
	}
}

// runVerify recomputes a sample of keys from the offline log and compares
// them with what the store serves; it exits non-zero on any mismatch.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", stderr)
	path := fs.String("config", "", "config file (YAML)")
	view := fs.String("view", "", "the view to check (required)")
	sample := fs.Int("sample", 100, "keys to check (0: every key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *view == "" {
		return errors.New("verify: --view is required")
	}
	s, err := loadSettings(*path)
	if err != nil {
		return err
	}
	store, hl, err := openStandalone(ctx, "verify", s, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := hl.Verify(ctx, *view, *sample, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", verifyJSON(res))
	if n := len(res.Mismatches); n > 0 {
		return fmt.Errorf("verify %s: %d mismatches in %d keys", *view, n, res.Keys)
	}
	return nil
}

// verifyJSON is what tilestream verify prints: the result with its times in
// RFC 3339 (UTC, milliseconds), as the HTTP API writes them, and
// "mismatches": [] when there are none.
func verifyJSON(res healer.VerifyResult) []byte {
	type mismatch struct {
		Key            string `json:"key"`
		Feature        string `json:"feature"`
		Served         any    `json:"served"`
		Recomputed     any    `json:"recomputed"`
		BatchWatermark string `json:"batch_watermark"`
		At             string `json:"at"`
	}
	out := struct {
		View       string     `json:"view"`
		Keys       int        `json:"keys_checked"`
		Events     int64      `json:"events_read"`
		Mismatches []mismatch `json:"mismatches"`
	}{View: res.View, Keys: res.Keys, Events: res.Events, Mismatches: []mismatch{}}
	for _, m := range res.Mismatches {
		out.Mismatches = append(out.Mismatches, mismatch{Key: m.Key, Feature: m.Feature, Served: m.Served, Recomputed: m.Recomputed,
			BatchWatermark: apiTime(m.BatchWatermark), At: apiTime(m.At)})
	}
	b, _ := json.MarshalIndent(out, "", "  ") // the values were decoded from JSON
	return b
}

// apiTime writes unix milliseconds as the HTTP API does: RFC 3339 in UTC
// with three fractional digits.
func apiTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(serving.TimeLayout)
}
