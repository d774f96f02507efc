package benchmarks

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Heal throughput against DuckDB: the healer's full heal of archived
// history (tilestream's offline-log Parquet files) into a fresh store, and
// DuckDB's GROUP BY (key, day) and (key, minute) over the very same files,
// with as many DuckDB threads as GOMAXPROCS.

// duckResult is groupby.mjs's output.
type duckResult struct {
	DuckDB  string `json:"duckdb"`
	Threads int    `json:"threads"`
	Grains  []struct {
		Grain  string    `json:"grain"`
		WallMS []float64 `json:"wall_ms"`
		CPUMS  []float64 `json:"cpu_ms"`
		Groups int64     `json:"groups"`
		Events int64     `json:"events"`
	} `json:"grains"`
	MaxRSSKB int64 `json:"max_rss_kb"`
}

// duckDir is the DuckDB script's directory (the benchmark runs in
// benchmarks/).
const duckDir = "duckdb"

// checkDuckDB reports whether node and the installed @duckdb/node-api
// (make bench-deps) are there.
func checkDuckDB() error {
	if _, err := exec.LookPath("node"); err != nil {
		return err
	}
	_, err := os.Stat(filepath.Join(duckDir, "node_modules", "@duckdb", "node-api", "package.json"))
	return err
}

// runDuckDB runs groupby.mjs over the files matching glob.
func runDuckDB(tb testing.TB, glob string, runs int) duckResult {
	tb.Helper()
	cmd := exec.Command("node", "groupby.mjs", "--glob", glob, "--key", "user_id", "--ts", "ts", "--value", "amount",
		"--threads", strconv.Itoa(runtime.GOMAXPROCS(0)), "--runs", strconv.Itoa(runs))
	cmd.Dir = duckDir
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			tb.Fatalf("duckdb: %v\n%s", err, ee.Stderr)
		}
		tb.Fatalf("duckdb: %v", err)
	}
	var r duckResult
	if err := json.Unmarshal(out, &r); err != nil {
		tb.Fatalf("duckdb: %v: %q", err, out)
	}
	return r
}

// healRow is one line of the heal table.
type healRow struct {
	System  string
	Events  int64
	Wall    time.Duration // median of the runs
	CPU     time.Duration // of that run
	Threads int
	PeakRSS int64
	Output  string // what it produced
}

func (r healRow) eventsPerSec() float64 { return float64(r.Events) / r.Wall.Seconds() }

func (r healRow) eventsPerCPUSec() float64 { return float64(r.Events) / r.CPU.Seconds() }

// benchPeerHeal archives n events over keys keys and 30 days, heals them in
// a child process and runs DuckDB over the same files.
func benchPeerHeal(b *testing.B, sc peerScale, rep *peerReport) {
	v := mustPeerView(b)
	at := time.Now().UnixMilli()
	off, _ := archivedHistory(b, v, sc.healEvents, sc.healKeys, at, false)
	files, bytes := archiveFiles(b, off.Root())
	rep.healData = healData{Events: sc.healEvents, Keys: sc.healKeys, Files: files, Bytes: bytes}

	b.Run("system=tilestream", func(b *testing.B) {
		var row healRow
		for b.Loop() {
			var walls []healRow
			for range sc.healRuns {
				res, ps := runChildOnce(b, childSpec{Mode: "heal", Store: b.TempDir(), Offline: off.Root(), At: at})
				if res.Heal.Events != int64(sc.healEvents) {
					b.Fatalf("heal read %d events, want %d", res.Heal.Events, sc.healEvents)
				}
				walls = append(walls, healRow{System: "tilestream heal", Events: res.Heal.Events, Wall: res.HealWall,
					CPU: res.HealCPU, Threads: runtime.GOMAXPROCS(0), PeakRSS: ps.PeakRSS,
					Output: strconv.Itoa(res.Heal.Records) + " records, " + strconv.Itoa(res.Heal.Keys) + " keys"})
			}
			slices.SortFunc(walls, func(x, y healRow) int { return int(x.Wall - y.Wall) })
			row = walls[len(walls)/2]
		}
		b.ReportMetric(row.eventsPerSec(), "events/s")
		b.ReportMetric(row.eventsPerCPUSec(), "events/cpu-s")
		rep.heal = append(rep.heal, row)
	})

	b.Run("system=duckdb", func(b *testing.B) {
		var r duckResult
		for b.Loop() {
			r = runDuckDB(b, filepath.Join(off.Root(), v.Name, "date=*", "*.parquet"), sc.duckRuns)
		}
		rep.duckVersion = r.DuckDB
		for _, g := range r.Grains {
			if g.Events != int64(sc.healEvents) {
				b.Fatalf("duckdb counted %d events, want %d", g.Events, sc.healEvents)
			}
			i := medianIndex(g.WallMS)
			row := healRow{System: "DuckDB GROUP BY key, " + g.Grain, Events: g.Events,
				Wall: time.Duration(g.WallMS[i] * float64(time.Millisecond)), CPU: time.Duration(g.CPUMS[i] * float64(time.Millisecond)),
				Threads: r.Threads, PeakRSS: r.MaxRSSKB << 10, Output: strconv.FormatInt(g.Groups, 10) + " groups"}
			b.ReportMetric(row.eventsPerSec(), g.Grain+"-events/s")
			rep.heal = append(rep.heal, row)
		}
	})
}

// medianIndex is the index of the median of xs (the lower one of an even
// count).
func medianIndex(xs []float64) int {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case xs[a] < xs[b]:
			return -1
		case xs[a] > xs[b]:
			return 1
		}
		return 0
	})
	return idx[(len(idx)-1)/2]
}

// archiveFiles counts the Parquet files under root and their bytes.
func archiveFiles(tb testing.TB, root string) (int, int64) {
	tb.Helper()
	matches, err := filepath.Glob(filepath.Join(root, "*", "date=*", "*.parquet"))
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			tb.Fatal(err)
		}
		n += fi.Size()
	}
	return len(matches), n
}
