package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
