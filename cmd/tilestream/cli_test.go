package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tilestream/tilestream/healer"
	"github.com/tilestream/tilestream/state"
)

// TestHelpExitsZero: -h on any command prints that command's usage and is
// no error (it was "flag: help requested", exit 1); tilestream -h prints the
// commands. A bad flag stays an error.
func TestHelpExitsZero(t *testing.T) {
	for _, cmd := range []string{"run", "check", "heal", "backfill", "verify", "init-store"} {
		for _, h := range []string{"-h", "--help"} {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), []string{cmd, h}, func(string) string { return "" }, &out, &errOut); err != nil {
				t.Errorf("tilestream %s %s: %v, want no error", cmd, h, err)
			}
			if want := "usage: tilestream " + cmd + " [flags]"; !strings.Contains(errOut.String(), want) || !strings.Contains(errOut.String(), "-config") {
				t.Errorf("tilestream %s %s printed %q, want %q and the flags", cmd, h, errOut.String(), want)
			}
		}
	}
	for _, h := range []string{"-h", "--help", "help"} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{h}, func(string) string { return "" }, &out, &errOut); err != nil || !strings.Contains(out.String(), "commands:") {
			t.Errorf("tilestream %s: %v, printed %q, want the commands", h, err, out.String())
		}
	}
	var errOut bytes.Buffer
	if err := run(context.Background(), []string{"heal", "-bogus"}, func(string) string { return "" }, &bytes.Buffer{}, &errOut); err == nil {
		t.Error("tilestream heal -bogus: no error")
	}
}

// standaloneConfig writes a config whose HTTP address nobody listens on (so
// tilestream heal heals standalone) and a JSON Lines file of events two days
// ago into its offline log; it returns the config's path and the store's.
func standaloneConfig(t *testing.T) (cfg, store string) {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	store = filepath.Join(dir, "online")
	offline := filepath.Join(dir, "offline")
	c := fmt.Sprintf(`kafka: {embedded: {listen: "127.0.0.1:0"}}
store: {kind: pebble, path: %s}
offline_log: {path: %s}
http: {listen: %q}
log: {level: warn}
views:
  - name: txn
    topic: transactions
    entity: user
    timestamp: ts
    granularity: 1m
    lateness: 1m
    features:
      - {name: n_1d, function: count, window: 1d}
      - {name: amount_sum_7d, function: sum, column: amount, window: 7d}
`, store, offline, addr)
	cfg = filepath.Join(dir, "cfg.yaml")
	if err := os.WriteFile(cfg, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-48 * time.Hour).Truncate(time.Hour)
	day := filepath.Join(offline, "txn", "date="+ts.UTC().Format("2006-01-02"))
	if err := os.MkdirAll(day, 0o755); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i, k := range []string{"u1", "u2", "u1", "u3"} {
		lines = append(lines, fmt.Sprintf(`{"user":%q,"ts":%d,"amount":%d}`, k, ts.UnixMilli()+int64(i)*1000, i+1))
	}
	if err := os.WriteFile(filepath.Join(day, "a.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, store
}

// TestVerifyOutput: tilestream verify prints "mismatches": [] when there
// are none (it printed null) and its times in RFC 3339 UTC like the HTTP
// API (it printed epoch milliseconds).
func TestVerifyOutput(t *testing.T) {
	cfg, _ := standaloneConfig(t)
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"heal", "--config", cfg}, os.Getenv, &out, &errOut); err != nil {
		t.Fatalf("tilestream heal: %v\n%s", err, errOut.String())
	}
	out.Reset()
	if err := run(ctx, []string{"verify", "--config", cfg, "--view", "txn"}, os.Getenv, &out, &errOut); err != nil {
		t.Fatalf("tilestream verify: %v\n%s", err, errOut.String())
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("verify printed %q: %v", out.String(), err)
	}
	if string(got["mismatches"]) != "[]" || string(got["keys_checked"]) != "3" || string(got["view"]) != `"txn"` {
		t.Errorf("verify printed %s, want view txn, 3 keys checked and \"mismatches\": []", out.String())
	}

	// A mismatch's times are the API's.
	wb := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC).UnixMilli()
	b := verifyJSON(healer.VerifyResult{View: "txn", Keys: 1, Events: 4, Mismatches: []healer.Mismatch{
		{Key: "u1", Feature: "n_1d", Served: 1.0, Recomputed: 2.0, BatchWatermark: wb, At: wb - 1},
	}})
	var res struct {
		Mismatches []map[string]any `json:"mismatches"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Mismatches) != 1 || res.Mismatches[0]["batch_watermark"] != "2026-11-25T00:00:00.000Z" ||
		res.Mismatches[0]["at"] != "2026-11-24T23:59:59.999Z" || res.Mismatches[0]["served"] != 1.0 || res.Mismatches[0]["key"] != "u1" {
		t.Errorf("verify printed %s, want the mismatch with batch_watermark 2026-11-25T00:00:00.000Z and at 2026-11-24T23:59:59.999Z", b)
	}
}

// TestStandaloneLockedHints: a command that needs the store while another
// process holds it says what to do, in its own words: verify is told to stop
// the service or run where the store is not locked, not to POST /v1/heal.
func TestStandaloneLockedHints(t *testing.T) {
	cfg, storePath := standaloneConfig(t)
	st, err := state.Open(state.Config{Path: storePath}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		cmd         []string
		want, avoid string
	}{
		{[]string{"verify", "--config", cfg, "--view", "txn"}, "verify reads the store itself: stop the service first, or run verify where the store is not locked", "POST /v1/heal"},
		{[]string{"backfill", "--config", cfg, "--view", "txn"}, "is the service running? stop it first, or use POST /v1/heal", "verify"},
	} {
		err := run(context.Background(), tc.cmd, os.Getenv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "the store is locked") || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tc.avoid) {
			t.Errorf("tilestream %s with the store held: %v; want the lock named and %q, not %q", tc.cmd[0], err, tc.want, tc.avoid)
		}
	}
	// A store that cannot open for another reason: no hint about the service.
	c, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	notDir := cfg + ".notdir.yaml"
	if err := os.WriteFile(notDir, bytes.Replace(c, []byte("path: "+storePath), []byte("path: "+cfg), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"verify", "--config", notDir, "--view", "txn"}, os.Getenv, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || strings.Contains(err.Error(), "locked") || strings.Contains(err.Error(), "service") {
		t.Errorf("tilestream verify with a file for its store: %v; want the error without a hint about the lock", err)
	}
	// Another process's lock is EAGAIN (or EACCES); other errors get no hint.
	for _, err := range []error{fmt.Errorf("open store: %w", syscall.EAGAIN), fmt.Errorf("open store: %w", syscall.EACCES)} {
		if !storeLocked(err) {
			t.Errorf("storeLocked(%v) = false", err)
		}
	}
	if storeLocked(fmt.Errorf("open store: %w", syscall.ENOENT)) {
		t.Error("storeLocked(ENOENT) = true")
	}
}

// TestBackfillProgress: the backfill's progress counts only this run's work.
// After a resume (185 of 385 days written before the interruption, read
// back for 30 s before the first new day) the first ETA is not known yet
// (it said 30m for a 58 s run: the read-back time over one day's bytes of
// every day's), then follows the days this run writes, and the last line's
// totals are this run's (it said bytes 119901219/184445093 at day 385/385).
// On a terminal the finished bar ends its line, and so does an interrupted
// one (the next log line was glued to it).
func TestBackfillProgress(t *testing.T) {
	clock := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	newProgress := func(tty bool) (*backfillProgress, *bytes.Buffer) {
		var out bytes.Buffer
		return &backfillProgress{w: &out, tty: tty, now: func() time.Time { return clock }}, &out
	}
	const dayBytes = 600_000
	lines := func(out *bytes.Buffer) []string { return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") }

	// Resumed: 185 days done before; 200 left, one a second after a 30 s read-back.
	b, out := newProgress(false)
	clock = clock.Add(30 * time.Second)
	for d := 186; d <= 385; d++ {
		clock = clock.Add(time.Second)
		b.report(healer.Progress{Days: d, DaysTotal: 385, Bytes: int64(d-185) * dayBytes, BytesTotal: 385 * dayBytes, Events: int64(d-185) * 10, Keys: 7})
	}
	b.done(nil)
	got := lines(out)
	if len(got) < 3 {
		t.Fatalf("resumed backfill printed %q, want a line every 5 s and the last", out.String())
	}
	for i, want := range []string{
		"backfill: day 1/200 of this run (185 of 385 days were written before the interruption), 600000 bytes, 10 events, 7 keys, eta ?",
		"backfill: day 6/200 of this run (185 of 385 days were written before the interruption), 3600000 bytes, 60 events, 7 keys, eta 3m14s",
	} {
		if got[i] != want {
			t.Errorf("resumed backfill line %d:\n got  %s\n want %s", i, got[i], want)
		}
	}
	if last, want := got[len(got)-1], "backfill: day 200/200 of this run (185 of 385 days were written before the interruption), 120000000 bytes, 2000 events, 7 keys, eta 0s"; last != want {
		t.Errorf("resumed backfill's last line:\n got  %s\n want %s", last, want)
	}

	// Fresh: bytes, the ETA from the rate after the first day.
	b, out = newProgress(false)
	clock = clock.Add(10 * time.Second) // listing the offline log
	for d := 1; d <= 10; d++ {
		clock = clock.Add(2 * time.Second)
		b.report(healer.Progress{Days: d, DaysTotal: 10, Bytes: int64(d) * dayBytes, BytesTotal: 10 * dayBytes, Events: int64(d), Keys: 3})
	}
	b.done(nil)
	got = lines(out)
	for i, want := range []string{
		"backfill: day 1/10, 600000/6000000 bytes, 1 events, 3 keys, eta ?",
		"backfill: day 4/10, 2400000/6000000 bytes, 4 events, 3 keys, eta 12s",
		"backfill: day 7/10, 4200000/6000000 bytes, 7 events, 3 keys, eta 6s",
		"backfill: day 10/10, 6000000/6000000 bytes, 10 events, 3 keys, eta 0s",
	} {
		if i >= len(got) || got[i] != want {
			t.Errorf("fresh backfill line %d:\n got  %q\n want %s", i, got, want)
			break
		}
	}

	// Resumed, and the heal ends without reporting its last day (its last
	// days were written before the interruption): done writes the last
	// line, with this run's totals.
	b, out = newProgress(false)
	b.report(healer.Progress{Days: 2, DaysTotal: 5, Bytes: dayBytes, BytesTotal: 5 * dayBytes})
	b.report(healer.Progress{Days: 3, DaysTotal: 5, Bytes: 2 * dayBytes, BytesTotal: 5 * dayBytes})
	b.done(nil)
	got = lines(out)
	if last := got[len(got)-1]; !strings.HasPrefix(last, "backfill: day 2/2 of this run (1 of 5 days were written before the interruption), 1200000 bytes,") {
		t.Errorf("last line %q, want day 2/2 of this run", last)
	}

	// Terminal: the bar's line ends when it finishes, or when the heal fails.
	for _, fail := range []bool{false, true} {
		b, out := newProgress(true)
		b.report(healer.Progress{Days: 1, DaysTotal: 3, Bytes: dayBytes, BytesTotal: 3 * dayBytes})
		if strings.HasSuffix(out.String(), "\n") {
			t.Errorf("the bar ended its line while running: %q", out.String())
		}
		var err error
		if fail {
			err = context.Canceled
		} else {
			b.report(healer.Progress{Days: 2, DaysTotal: 3, Bytes: 2 * dayBytes, BytesTotal: 3 * dayBytes})
			b.report(healer.Progress{Days: 3, DaysTotal: 3, Bytes: 3 * dayBytes, BytesTotal: 3 * dayBytes})
		}
		b.done(err)
		if s := out.String(); !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") || !strings.Contains(s, "day 1/3") {
			t.Errorf("the bar (heal failed: %v) printed %q: want its line ended once", fail, s)
		}
	}
}
