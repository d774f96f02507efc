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
