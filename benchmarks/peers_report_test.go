package benchmarks

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// peerReport collects BenchmarkPeers' figures and writes them as markdown
// and an SVG chart.
type peerReport struct {
	scale      peerScale
	start, end time.Time
	loadStart  string

	cells      []cellRow
	storage    []storageRow
	rss        []rssRow
	levelHeals []levelHeal
	ingest     []ingestRow
	heal       []healRow
	healData   healData
	flat       []flatRow

	redisVersion, duckVersion string
}

type cellRow struct {
	System string
	Level  peerLevel
	Spec   cellSpec
	Stats  cellStats
}

type storageRow struct {
	System string
	Level  peerLevel
	Bytes  int64
	What   string
}

type rssRow struct {
	System, Phase string
	Level         peerLevel
	Bytes         int64
}

type levelHeal struct {
	Level     peerLevel
	Records   int
	Wall      time.Duration
	Watermark time.Time
}

type healData struct {
	Events, Keys, Files int
	Bytes               int64
}

func newPeerReport(sc peerScale) *peerReport {
	return &peerReport{scale: sc, start: time.Now(), loadStart: loadAvg()}
}

func (r *peerReport) addCell(system string, lvl peerLevel, c cellSpec, st cellStats) {
	r.cells = append(r.cells, cellRow{system, lvl, c, st})
}

func (r *peerReport) addStorage(system string, lvl peerLevel, n int64, what string) {
	r.storage = append(r.storage, storageRow{system, lvl, n, what})
}

func (r *peerReport) addRSS(system, phase string, lvl peerLevel, n int64) {
	r.rss = append(r.rss, rssRow{system, phase, lvl, n})
}

// cell finds a measured cell (not a skipped one).
func (r *peerReport) cell(system string, events, clients, keys int) (cellStats, bool) {
	st, ok := r.anyCell(system, events, clients, keys)
	return st, ok && st.Skipped == ""
}

// anyCell finds a cell, run or skipped.
func (r *peerReport) anyCell(system string, events, clients, keys int) (cellStats, bool) {
	for _, c := range r.cells {
		if c.System == system && c.Level.events == events && c.Spec.Clients == clients && c.Spec.Keys == keys {
			return c.Stats, true
		}
	}
	return cellStats{}, false
}

// servingSystems in the order of the tables and the chart's legend.
var servingSystems = []string{sysTS, sysTSEmbedded, sysTSStream, sysRaw, sysBuckets, sysScan}

var systemLabel = map[string]string{
	sysTS:         "tilestream (healed, over HTTP)",
	sysTSEmbedded: "tilestream embedded (healed, in process, no HTTP)",
	sysTSStream:   "tilestream (stream tiles only, before a heal)",
	sysRaw:        "Redis raw events (sorted sets)",
	sysBuckets:    "Redis minute buckets (hashes)",
	sysScan:       "naive scan (raw events in Pebble)",
}

// targetLevel is the events per key the ratio targets are read at: 10⁶, or
// the largest level of a smaller run.
func (r *peerReport) targetLevel() int {
	lv := 0
	for _, l := range r.scale.levels {
		if l.events <= 1_000_000 {
			lv = max(lv, l.events)
		}
	}
	return lv
}

// write writes <dir>/<date>[-<scale>].md and .svg and returns their paths.
func (r *peerReport) write(dir string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	name := r.start.UTC().Format("2006-01-02")
	if r.scale.name != "short" {
		name += "-" + r.scale.name
	}
	svgPath := filepath.Join(dir, name+".svg")
	mdPath := filepath.Join(dir, name+".md")
	if err := os.WriteFile(svgPath, r.chart(), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(mdPath, r.markdown(name+".svg"), 0o644); err != nil {
		return "", "", err
	}
	return mdPath, svgPath, nil
}

func (r *peerReport) markdown(svg string) []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format+"\n", a...) }
	flags := "-peers.scale=" + r.scale.name
	cmdName := "make bench"
	if r.scale.name == "full" {
		cmdName = "make bench-full"
	}
	p("# tilestream against its peers — %s (%s run)", r.start.UTC().Format("2006-01-02"), r.scale.name)
	p("")
	p("Written by `%s` (`go test -tags pebblegozstd -run '^$' -bench '^BenchmarkPeers$' -benchtime 1x ./benchmarks -args %s -peers.report=results`).", cmdName, flags)
	p("Method and caveats: [../README.md](../README.md#peers).")
	p("")
	p("- Commit: `%s`; started %s, took %s.", gitDescribe(), r.start.UTC().Format(time.RFC3339), r.end.Sub(r.start).Round(time.Second))
	p("- Machine: %s, %d cores, %s RAM, GOMAXPROCS=%d, %s; redis-server %s; DuckDB %s (Node %s).",
		cpuModel(), runtime.NumCPU(), memTotal(), runtime.GOMAXPROCS(0), runtime.Version(), r.redisVersion, r.duckVersion, nodeVersion())
	p("- Load average (1, 5, 15 min) at the start: %s; at the end: %s. The machine may be shared: compare ratios within this run, not figures across runs.", r.loadStart, loadAvg())
	p("")

	p("## Targets")
	p("")
	p("Ratios measured in this run. Latencies are p99 with 1 client and 1 key per request, each system at its own best path (tilestream over HTTP + JSON, the others without any HTTP layer).")
	p("")
	p("| target | figures | ratio | met? |")
	p("|---|---|---|---|")
	for _, t := range r.targets() {
		p("| %s | %s | %s | %s |", t.name, t.figures, t.ratio, t.met)
	}
	p("")

	p("## Serving p99 against events per key")
	p("")
	p("![serving p99 against events per key](%s)", svg)
	p("")
	p("1 client, 1 key per request. Each key's events are spread over the 30 days before the query time; every request computes sum, count, min, max and mean over 1h, 1d, 7d, 30d and lifetime.")
	p("")
	p("| system | %s |", strings.Join(r.levelHeaders(), " | "))
	p("|---|%s", strings.Repeat("---|", len(r.scale.levels)))
	for _, sys := range servingSystems {
		var cols []string
		for _, l := range r.scale.levels {
			if st, ok := r.cell(sys, l.events, 1, 1); ok {
				cols = append(cols, fmtDur(st.P99))
			} else {
				cols = append(cols, "—")
			}
		}
		p("| %s | %s |", systemLabel[sys], strings.Join(cols, " | "))
	}
	p("")
	p("### Ratio to tilestream (healed): peer p99 ÷ tilestream p99")
	p("")
	p("| clients × keys/request | peer | %s |", strings.Join(r.levelHeaders(), " | "))
	p("|---|---|%s", strings.Repeat("---|", len(r.scale.levels)))
	for _, shape := range [][2]int{{1, 1}, {16, 1}, {1, 100}, {16, 100}} {
		for _, sys := range servingSystems[1:] {
			var cols []string
			found := false
			for _, l := range r.scale.levels {
				peer, ok1 := r.cell(sys, l.events, shape[0], shape[1])
				ts, ok2 := r.cell(sysTS, l.events, shape[0], shape[1])
				if ok1 && ok2 && ts.P99 > 0 {
					cols = append(cols, fmtRatio(float64(peer.P99)/float64(ts.P99)))
					found = true
				} else {
					cols = append(cols, "—")
				}
			}
			if found {
				p("| %d × %d | %s | %s |", shape[0], shape[1], sys, strings.Join(cols, " | "))
			}
		}
	}
	p("")

	if len(r.flat) > 0 {
		p("### Flat latency, interleaved")
		p("")
		p("One tilestream server per healed data set, one client sending one request to each in turn (%d rounds), so that every data set meets the same machine load at the same moments. The sequential cells above each met the load of their own seconds.", r.scale.flatRounds)
		p("")
		p("| events/key × keys | p50 | p99 | p999 | max | p50 ÷ first | p99 ÷ first |")
		p("|---|---|---|---|---|---|---|")
		for _, f := range r.flat {
			p999 := "—"
			if f.Stats.N >= 1000 {
				p999 = fmtDur(f.Stats.P999)
			}
			first := r.flat[0].Stats
			p("| %s × %d | %s | %s | %s | %s | %s | %s |", levelName(f.Level.events), f.Level.keys, fmtDur(f.Stats.P50), fmtDur(f.Stats.P99), p999, fmtDur(f.Stats.Max),
				fmtRatio(float64(f.Stats.P50)/float64(first.P50)), fmtRatio(float64(f.Stats.P99)/float64(first.P99)))
		}
		p("")
	}

	p("## Serving, every cell")
	p("")
	p("Closed loop: each client sends its next request when the last one answered. A cell stops after %d requests or %s (a request in flight then still counts); p999 is given from 1,000 requests on. Server CPU is the serving process's CPU time (redis-server, the tilestream server; for the embedded naive scan the whole process) per request.",
		r.scale.requests, r.scale.budget)
	p("")
	p("| events/key × keys | keys/request | clients | system | p50 | p99 | p999 | max | requests/s | requests | server CPU/request |")
	p("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, l := range r.scale.levels {
		for _, c := range r.scale.cells(l) {
			for _, sys := range servingSystems {
				st, ok := r.anyCell(sys, l.events, c.Clients, c.Keys)
				if !ok {
					continue
				}
				if st.Skipped != "" {
					p("| %s × %d | %d | %d | %s | not run: %s |||||||", levelName(l.events), l.keys, c.Keys, c.Clients, sys, st.Skipped)
					continue
				}
				p999 := "—"
				if st.N >= 1000 {
					p999 = fmtDur(st.P999)
				}
				cpu := "—"
				if st.ServerCPU >= 0 && st.N > 0 {
					cpu = fmtDur(st.ServerCPU / time.Duration(st.N))
				}
				p("| %s × %d | %d | %d | %s | %s | %s | %s | %s | %s | %d | %s |", levelName(l.events), l.keys, c.Keys, c.Clients, sys,
					fmtDur(st.P50), fmtDur(st.P99), p999, fmtDur(st.Max), fmtCount(st.Throughput), st.N, cpu)
			}
		}
	}
	p("")

	p("## Ingest")
	p("")
	if len(r.ingest) > 0 {
		p("%s events over %s keys, stamped within the last hour (a live stream), produced to an in-process kfake topic of 8 partitions; each system consumes all of them into served state. The benchmark process (kfake, the consumer, tilestream or the Pebble peer) and redis-server share the machine's %d cores; events/cpu-s divides by the CPU time of every process involved.",
			fmtCount(float64(r.scale.ingestEvents)), fmtCount(float64(r.scale.ingestKeys)), runtime.NumCPU())
		p("")
		p("| system | events/s | events/s/core | events/cpu-s | wall | peak RSS of the server | notes |")
		p("|---|---|---|---|---|---|---|")
		for _, in := range r.ingest {
			rss := "—"
			if in.PeakRSS > 0 {
				rss = fmtBytes(in.PeakRSS)
			}
			p("| %s | %s | %s | %s | %s | %s | %s |", in.System, fmtCount(in.eventsPerSec()), fmtCount(in.eventsPerSec()/float64(runtime.GOMAXPROCS(0))),
				fmtCount(in.eventsPerCPUSec()), fmtDur(in.Wall), rss, in.Note)
		}
		p("")
	}

	p("## Heal against DuckDB")
	p("")
	if len(r.heal) > 0 {
		d := r.healData
		p("The same offline-log Parquet files: %s events over %s keys and 30 days, %d files, %s. tilestream: a full heal into a fresh store (day and detail records, summaries, heads; median of %d). DuckDB: `CREATE TEMP TABLE … AS SELECT key, date_trunc(grain, ts), count(*), sum, min, max … GROUP BY ALL` over `read_parquet` (median of %d).",
			fmtCount(float64(d.Events)), fmtCount(float64(d.Keys)), d.Files, fmtBytes(d.Bytes), r.scale.healRuns, r.scale.duckRuns)
		p("")
		p("| system | threads | events/s | events/s per thread | events/cpu-s | wall | peak RSS | output |")
		p("|---|---|---|---|---|---|---|---|")
		for _, h := range r.heal {
			p("| %s | %d | %s | %s | %s | %s | %s | %s |", h.System, h.Threads, fmtCount(h.eventsPerSec()), fmtCount(h.eventsPerSec()/float64(h.Threads)),
				fmtCount(h.eventsPerCPUSec()), fmtDur(h.Wall), fmtBytes(h.PeakRSS), h.Output)
		}
		p("")
	}

	p("## Storage and memory")
	p("")
	p("Bytes per key of each serving data set. Pebble directories are measured after a full manual compaction; Redis by `used_memory` over an empty server. tilestream (healed) is after the heal's garbage collection deleted the stream records below the watermark; the offline log is tilestream's durable copy of every event (the Redis designs keep none).")
	p("")
	p("| events/key × keys | system | bytes/key | total | measured as |")
	p("|---|---|---|---|---|")
	for _, l := range r.scale.levels {
		for _, s := range r.storage {
			if s.Level == l {
				p("| %s × %d | %s | %s | %s | %s |", levelName(l.events), l.keys, s.System, fmtBytes(s.Bytes/int64(l.keys)), fmtBytes(s.Bytes), s.What)
			}
		}
	}
	p("")
	p("Peak RSS (VmHWM) of each process. A serve process's peak covers opening its store and every cell of its data set; Redis's also covers loading the data set.")
	p("")
	p("| events/key × keys | system | phase | peak RSS |")
	p("|---|---|---|---|")
	for _, l := range r.scale.levels {
		for _, s := range r.rss {
			if s.Level == l {
				p("| %s × %d | %s | %s | %s |", levelName(l.events), l.keys, s.System, s.Phase, fmtBytes(s.Bytes))
			}
		}
	}
	p("")
	if len(r.levelHeals) > 0 {
		p("Heals of the serving data sets (child process, full heal): %s.", r.levelHealText())
		p("")
	}
	p("## DynamoDB write units per 1,000 events")
	p("")
	p("Not part of this run: it uses the embedded Pebble store, and the peers have no DynamoDB. Measured from the DynamoDB store's own counters against dynalite by `go test -tags pebblegozstd -run '^$' -bench BenchmarkDynamoWrites -benchtime 300x ./ingest`; figures in [../README.md](../README.md#peers).")
	p("")
	return w.Bytes()
}

func (r *peerReport) levelHealText() string {
	var parts []string
	for _, h := range r.levelHeals {
		parts = append(parts, fmt.Sprintf("%s × %d: %d records in %s", levelName(h.Level.events), h.Level.keys, h.Records, fmtDur(h.Wall)))
	}
	return strings.Join(parts, "; ")
}

func (r *peerReport) levelHeaders() []string {
	var h []string
	for _, l := range r.scale.levels {
		h = append(h, fmt.Sprintf("%s events/key", levelName(l.events)))
	}
	return h
}

type targetRow struct{ name, figures, ratio, met string }

func yesNo(ok bool) string {
	if ok {
		return "**yes**"
	}
	return "**no**"
}

func (r *peerReport) targets() []targetRow {
	var out []targetRow
	lv := r.targetLevel()
	small := r.scale.levels[0].events
	missing := func(name string) targetRow { return targetRow{name, "not measured in this run", "—", "—"} }

	name := fmt.Sprintf("flat latency: p99 at %s events/key ≤ 1.5× p99 at %s (tilestream, healed)", levelName(lv), levelName(small))
	var hi, lo cellStats
	var ok1, ok2 bool
	for _, f := range r.flat {
		switch f.Level.events {
		case lv:
			hi, ok1 = f.Stats, true
		case small:
			lo, ok2 = f.Stats, true
		}
	}
	how := "interleaved (serve/flat)"
	if !ok1 || !ok2 {
		hi, ok1 = r.cell(sysTS, lv, 1, 1)
		lo, ok2 = r.cell(sysTS, small, 1, 1)
		how = "sequential cells"
	}
	if ok1 && ok2 {
		x := float64(hi.P99) / float64(lo.P99)
		out = append(out, targetRow{name, fmt.Sprintf("%s vs %s, %s; p50 %s vs %s", fmtDur(hi.P99), fmtDur(lo.P99), how, fmtDur(hi.P50), fmtDur(lo.P50)), fmtRatio(x), yesNo(x <= 1.5)})
	} else {
		out = append(out, missing(name))
	}
	for _, peer := range []struct {
		sys  string
		want float64
		text string
	}{{sysRaw, 100, "≥ 100× lower p99 than Redis raw events"}, {sysBuckets, 10, "≥ 10× lower p99 than Redis minute buckets (30-day windows)"}} {
		name := fmt.Sprintf("%s at %s events/key", peer.text, levelName(lv))
		ps, ok1 := r.cell(peer.sys, lv, 1, 1)
		ts, ok2 := r.cell(sysTS, lv, 1, 1)
		if ok1 && ok2 {
			x := float64(ps.P99) / float64(ts.P99)
			out = append(out, targetRow{name, fmt.Sprintf("%s: %s, tilestream: %s", peer.sys, fmtDur(ps.P99), fmtDur(ts.P99)), fmtRatio(x), yesNo(x >= peer.want)})
		} else {
			out = append(out, missing(name))
		}
	}
	var heal, duck *healRow
	for i := range r.heal {
		switch r.heal[i].System {
		case "tilestream heal":
			heal = &r.heal[i]
		case "DuckDB GROUP BY key, day":
			duck = &r.heal[i]
		}
	}
	name = "heal throughput ≥ ⅓ of DuckDB's GROUP BY (key, day) on the same files"
	if heal != nil && duck != nil {
		x := heal.eventsPerSec() / duck.eventsPerSec()
		out = append(out, targetRow{name, fmt.Sprintf("%s vs %s events/s (per CPU-second: %s vs %s)", fmtCount(heal.eventsPerSec()), fmtCount(duck.eventsPerSec()),
			fmtCount(heal.eventsPerCPUSec()), fmtCount(duck.eventsPerCPUSec())), fmtRatio(x), yesNo(x >= 1.0/3)})
	} else {
		out = append(out, missing(name))
	}
	name = "ingest ≥ 100k events/s per core (tilestream, with its offline log)"
	var in *ingestRow
	for i := range r.ingest {
		if r.ingest[i].System == sysTS {
			in = &r.ingest[i]
		}
	}
	if in != nil {
		perCore := in.eventsPerSec() / float64(runtime.GOMAXPROCS(0))
		out = append(out, targetRow{name, fmt.Sprintf("%s events/s on %d cores = %s per core; %s per CPU-second", fmtCount(in.eventsPerSec()), runtime.GOMAXPROCS(0),
			fmtCount(perCore), fmtCount(in.eventsPerCPUSec())), fmtRatio(perCore / 100_000), yesNo(perCore >= 100_000)})
	} else {
		out = append(out, missing(name))
	}
	return out
}

// chart draws serving p99 against events per key, log-log, one line per
// system (1 client, 1 key per request).
func (r *peerReport) chart() []byte {
	const (
		width, height          = 760, 470
		left, right, top, bott = 80, 250, 50, 60
	)
	pw, ph := float64(width-left-right), float64(height-top-bott)
	type pt struct{ x, y float64 }
	series := map[string][]pt{}
	minY, maxY := math.Inf(1), math.Inf(-1)
	minX, maxX := math.Inf(1), math.Inf(-1)
	for _, l := range r.scale.levels {
		minX, maxX = math.Min(minX, math.Log10(float64(l.events))), math.Max(maxX, math.Log10(float64(l.events)))
	}
	for _, sys := range servingSystems {
		for _, l := range r.scale.levels {
			st, ok := r.cell(sys, l.events, 1, 1)
			if !ok || st.P99 <= 0 {
				continue
			}
			y := math.Log10(float64(st.P99) / float64(time.Millisecond))
			series[sys] = append(series[sys], pt{math.Log10(float64(l.events)), y})
			minY, maxY = math.Min(minY, y), math.Max(maxY, y)
		}
	}
	if math.IsInf(minY, 0) {
		minY, maxY = -1, 1
	}
	minY, maxY = math.Floor(minY), math.Ceil(maxY)
	if maxY == minY {
		maxY++
	}
	if maxX == minX {
		maxX++
	}
	X := func(x float64) float64 { return float64(left) + (x-minX)/(maxX-minX)*pw }
	Y := func(y float64) float64 { return float64(top) + (maxY-y)/(maxY-minY)*ph }

	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format+"\n", a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>`)
	p(`<text x="%d" y="24" font-size="15" font-weight="bold">Serving p99 against events per key</text>`, left)
	p(`<text x="%d" y="40" fill="#555">1 client, 1 key per request, %s run of %s; log-log</text>`, left, r.scale.name, r.start.UTC().Format("2006-01-02"))
	for e := minY; e <= maxY; e++ {
		y := Y(e)
		p(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, left, y, float64(left)+pw, y)
		p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`, left-6, y+4, decadeLabel(int(e)))
	}
	for _, l := range r.scale.levels {
		x := X(math.Log10(float64(l.events)))
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#eee"/>`, x, top, x, float64(top)+ph)
		p(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, float64(top)+ph+18, levelLabel(l.events))
	}
	p(`<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`, left, top, pw, ph)
	p(`<text x="%.1f" y="%d" text-anchor="middle">events per key (over 30 days)</text>`, float64(left)+pw/2, height-14)
	p(`<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">p99 latency</text>`, float64(top)+ph/2, float64(top)+ph/2)
	colors := map[string]string{sysTS: "#1b9e77", sysTSEmbedded: "#1b9e77", sysTSStream: "#66a61e", sysRaw: "#d95f02", sysBuckets: "#7570b3", sysScan: "#e7298a"}
	ly := top + 10
	for _, sys := range servingSystems {
		pts := series[sys]
		if len(pts) == 0 {
			continue
		}
		dash, wdt := "", 2.0
		switch sys {
		case sysTSStream:
			dash = ` stroke-dasharray="6 4"`
		case sysTSEmbedded:
			dash = ` stroke-dasharray="2 3"`
		}
		if sys == sysTS {
			wdt = 3
		}
		var path []string
		for _, q := range pts {
			path = append(path, fmt.Sprintf("%.1f,%.1f", X(q.x), Y(q.y)))
		}
		p(`<polyline points="%s" fill="none" stroke="%s" stroke-width="%.0f"%s/>`, strings.Join(path, " "), colors[sys], wdt, dash)
		for _, q := range pts {
			p(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`, X(q.x), Y(q.y), colors[sys])
		}
		lx := width - right + 16
		p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="%.0f"%s/>`, lx, ly, lx+24, ly, colors[sys], wdt, dash)
		label := systemLabel[sys]
		if i := strings.Index(label, " ("); i > 0 {
			p(`<text x="%d" y="%d">%s</text>`, lx+30, ly+4, label[:i])
			p(`<text x="%d" y="%d" fill="#555" font-size="11">%s</text>`, lx+30, ly+18, label[i+1:])
			ly += 40
		} else {
			p(`<text x="%d" y="%d">%s</text>`, lx+30, ly+4, label)
			ly += 28
		}
	}
	p(`</svg>`)
	return w.Bytes()
}

// decadeLabel names 10^e milliseconds: 100 µs, 1 ms, 10 ms, 1 s.
func decadeLabel(e int) string {
	switch {
	case e < -3:
		return "10" + superscript(strconv.Itoa(e+3)) + " µs"
	case e < 0:
		return strconv.Itoa(pow10(e+3)) + " µs"
	case e < 3:
		return strconv.Itoa(pow10(e)) + " ms"
	}
	return strconv.Itoa(pow10(e-3)) + " s"
}

// levelLabel writes 10^n with a superscript.
func levelLabel(n int) string {
	name := levelName(n)
	if e, ok := strings.CutPrefix(name, "1e"); ok {
		return "10" + superscript(e)
	}
	return name
}

func superscript(s string) string {
	const sup = "⁰¹²³⁴⁵⁶⁷⁸⁹"
	digits := []rune(sup)
	var b strings.Builder
	for _, c := range s {
		if c == '-' {
			b.WriteRune('⁻')
		} else {
			b.WriteRune(digits[c-'0'])
		}
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s"
}

func fmtRatio(x float64) string {
	switch {
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64) + "×"
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64) + "×"
	case x >= 0.1:
		return strconv.FormatFloat(x, 'f', 2, 64) + "×"
	}
	return strconv.FormatFloat(x, 'f', 3, 64) + "×"
}

// fmtCount writes 1234567 as 1.23M.
func fmtCount(x float64) string {
	switch {
	case x >= 1e9:
		return strconv.FormatFloat(x/1e9, 'f', 2, 64) + "G"
	case x >= 1e6:
		return strconv.FormatFloat(x/1e6, 'f', 2, 64) + "M"
	case x >= 1e4:
		return strconv.FormatFloat(x/1e3, 'f', 0, 64) + "k"
	case x >= 1e3:
		return strconv.FormatFloat(x/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

func fmtBytes(n int64) string {
	x := float64(n)
	switch {
	case x >= 1<<30:
		return strconv.FormatFloat(x/(1<<30), 'f', 2, 64) + " GiB"
	case x >= 1<<20:
		return strconv.FormatFloat(x/(1<<20), 'f', 1, 64) + " MiB"
	case x >= 1<<10:
		return strconv.FormatFloat(x/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func nodeVersion() string {
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return fmtBytes(kb << 10)
			}
		}
	}
	return "unknown"
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(slices.Clone(f[:3]), ", ")
}
