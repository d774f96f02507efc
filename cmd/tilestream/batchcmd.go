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
	progress := progressReporter(stderr)
	res, err := hl.Heal(ctx, *view, healer.Options{Full: true, From: f, To: t, Progress: progress})
	if err != nil {
		return fmt.Errorf("backfill %s: %w (run it again to resume)", *view, err)
	}
	out, _ := json.Marshal(map[string]any{"result": res,
		"writes": map[string]any{"records": res.Records, "per_tile_writes": res.Tiles}})
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// progressReporter draws a progress bar on a terminal and writes a plain
// line at most every 5 s otherwise.
func progressReporter(w io.Writer) func(healer.Progress) {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var bar *progressbar.ProgressBar
		return func(p healer.Progress) {
			if bar == nil {
				bar = progressbar.NewOptions64(p.BytesTotal, progressbar.OptionSetWriter(w),
					progressbar.OptionShowBytes(true), progressbar.OptionSetPredictTime(true),
					progressbar.OptionShowCount(), progressbar.OptionSetDescription("backfill"))
			}
			bar.Describe(fmt.Sprintf("backfill: day %d/%d, %d events, %d keys", p.Days, p.DaysTotal, p.Events, p.Keys))
			_ = bar.Set64(p.Bytes)
		}
	}
	start := time.Now()
	var last time.Time
	return func(p healer.Progress) {
		if time.Since(last) < 5*time.Second && p.Days < p.DaysTotal {
			return
		}
		last = time.Now()
		eta := "?"
		if p.Bytes > 0 {
			rem := time.Duration(float64(time.Since(start)) * float64(p.BytesTotal-p.Bytes) / float64(p.Bytes))
			eta = rem.Round(time.Second).String()
		}
		fmt.Fprintf(w, "backfill: day %d/%d, %d events, %d/%d bytes, %d keys, eta %s\n",
			p.Days, p.DaysTotal, p.Events, p.Bytes, p.BytesTotal, p.Keys, eta)
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
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}
