package benchmarks

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A latency cell: one system, one data set, a number of concurrent clients
// and of keys per request. Each client sends requests back to back (closed
// loop) until the cell has sent its requests or its time budget is spent;
// a request in flight at the deadline still completes and counts.

// cellSpec says how to run a cell.
type cellSpec struct {
	Clients  int           // concurrent clients, each one request at a time
	Keys     int           // keys per request
	Requests int           // stop after this many requests …
	Budget   time.Duration // … or once this much time has passed
}

// cellStats is what a cell measured.
type cellStats struct {
	N          int           // requests completed
	Wall       time.Duration // from the first request to the last answer
	P50, P99   time.Duration
	P999, Max  time.Duration // P999 only when N ≥ 1000
	ServerCPU  time.Duration // CPU the serving process used during the cell; < 0 unknown
	Throughput float64       // requests per second
	Skipped    string        // why the cell was not run ("" when it was)
}

// skipReason says why spec should not run, given the cells of the same
// system and data set run before it: when one request alone (the p50 of
// the 1-client cell with as many keys per request) times the clients
// exceeds twice the budget, the concurrent cell would only measure a
// queue — Redis serves one request at a time, and 2 cores do not go far —
// for minutes, and hold that many answers in memory at once.
func skipReason(spec cellSpec, specs []cellSpec, done []cellStats) string {
	if spec.Clients == 1 {
		return ""
	}
	for i, s := range specs[:len(done)] {
		if s.Clients == 1 && s.Keys == spec.Keys && done[i].Skipped == "" &&
			done[i].P50*time.Duration(spec.Clients) > 2*spec.Budget {
			return fmt.Sprintf("one request alone takes %s (p50); %d at once would queue for over %s", fmtDur(done[i].P50), spec.Clients, 2*spec.Budget)
		}
	}
	return ""
}

// runCells runs the cells in order, skipping those skipReason rules out.
func runCells(specs []cellSpec, keys []string, read func(keys []string) error, cpu func() time.Duration) ([]cellStats, error) {
	var out []cellStats
	for _, c := range specs {
		if why := skipReason(c, specs, out); why != "" {
			out = append(out, cellStats{Skipped: why})
			continue
		}
		st, err := runCell(c, keys, read, cpu)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// requestKeys returns the keys of request i: keys[i·n … i·n+n−1], wrapping.
func requestKeys(keys []string, n, i int) []string {
	if n >= len(keys) {
		return keys
	}
	out := make([]string, n)
	for j := range out {
		out[j] = keys[(i*n+j)%len(keys)]
	}
	return out
}

// runCell runs read under spec over keys. A short single-client warm-up
// (at most 1/5 of the budget, 100 requests) comes first: it opens
// connections and fills caches, as a serving system in steady state has.
// cpu, when not nil, reads the serving process's CPU time.
func runCell(spec cellSpec, keys []string, read func(keys []string) error, cpu func() time.Duration) (cellStats, error) {
	warmEnd := time.Now().Add(spec.Budget / 5)
	for i := 0; i < min(100, spec.Requests) && (i == 0 || time.Now().Before(warmEnd)); i++ {
		if err := read(requestKeys(keys, spec.Keys, i)); err != nil {
			return cellStats{}, err
		}
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	cpu0 := time.Duration(-1)
	if cpu != nil {
		cpu0 = cpu()
	}
	start := time.Now()
	deadline := start.Add(spec.Budget)
	for range spec.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, spec.Requests/spec.Clients+1)
			for {
				i := int(next.Add(1)) - 1
				if i >= spec.Requests || (i > 0 && time.Now().After(deadline)) {
					break
				}
				t0 := time.Now()
				err := read(requestKeys(keys, spec.Keys, i))
				lat = append(lat, time.Since(t0))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					break
				}
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return cellStats{}, firstErr
	}
	st := latencyStats(all, wall)
	st.ServerCPU = -1
	if cpu != nil {
		st.ServerCPU = cpu() - cpu0
	}
	return st, nil
}

// latencyStats summarises latencies with nearest-rank percentiles.
func latencyStats(lat []time.Duration, wall time.Duration) cellStats {
	slices.Sort(lat)
	n := len(lat)
	st := cellStats{N: n, Wall: wall}
	if n == 0 {
		return st
	}
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(float64(n)*p)) - 1
		return lat[min(max(i, 0), n-1)]
	}
	st.P50, st.P99, st.Max = rank(0.50), rank(0.99), lat[n-1]
	if n >= 1000 {
		st.P999 = rank(0.999)
	}
	st.Throughput = float64(n) / wall.Seconds()
	return st
}
