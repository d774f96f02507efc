package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tilestream/tilestream/state"
	"github.com/tilestream/tilestream/tiling"
)

// event is a test event, kept apart from tiling so the oracle can recompute
// values from it without tiling's help.
type event struct {
	key      string
	ts       int64
	amount   *float64 // nil: field absent
	merchant string   // "": field absent
}

func num(f float64) *float64 { return &f }

// memReader is an in-memory online store built with tiling's own record
// builder. Faults are injected per key.
type memReader struct {
	mu    sync.Mutex
	data  map[string]map[string]*memKey // view → key → data
	fault map[string]func(ctx context.Context) error
	reads int
}

type memKey struct {
	records []*tiling.Record // ascending Start
	bw      int64
}

func newMemReader() *memReader {
	return &memReader{data: map[string]map[string]*memKey{}, fault: map[string]func(context.Context) error{}}
}

// load applies events to v's records; offsets number events in order.
func (m *memReader) load(t testing.TB, v *tiling.View, evs []event) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := m.data[v.Name]
	if keys == nil {
		keys = map[string]*memKey{}
		m.data[v.Name] = keys
	}
	cols := v.Columns()
	for i, e := range evs {
		mk := keys[e.key]
		if mk == nil {
			mk = &memKey{bw: tiling.MinTime}
			keys[e.key] = mk
		}
		start := v.RecordStart(e.ts)
		j, found := slices.BinarySearchFunc(mk.records, start, func(r *tiling.Record, s int64) int {
			switch {
			case r.Start < s:
				return -1
			case r.Start > s:
				return 1
			}
			return 0
		})
		if !found {
			mk.records = slices.Insert(mk.records, j, v.NewRecord(e.ts))
		}
		in := make([]tiling.Input, len(cols))
		for c, col := range cols {
			switch {
			case col == "amount" && e.amount != nil:
				in[c] = tiling.Input{Kind: tiling.Number, Num: *e.amount, Raw: []byte(strconv.FormatFloat(*e.amount, 'g', -1, 64))}
			case col == "merchant" && e.merchant != "":
				raw, _ := json.Marshal(e.merchant)
				in[c] = tiling.Input{Kind: tiling.Other, Raw: raw}
			}
		}
		ev := &tiling.Event{Key: e.key, TS: e.ts, Pos: tiling.Pos{Partition: 0, Offset: int64(i)}, Inputs: in}
		if !v.Add(mk.records[j], ev) {
			t.Fatalf("event %d not applied", i)
		}
	}
}

func (m *memReader) setBatchWatermark(view, key string, bw int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data[view] == nil {
		m.data[view] = map[string]*memKey{}
	}
	mk := m.data[view][key]
	if mk == nil {
		mk = &memKey{}
		m.data[view][key] = mk
	}
	mk.bw = bw
}

func (m *memReader) setFault(key string, f func(ctx context.Context) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault[key] = f
}

func (m *memReader) ReadKey(ctx context.Context, v *tiling.View, key string, t int64) (state.KeyData, error) {
	from, to := v.ReadRange(t)
	m.mu.Lock()
	m.reads++
	f := m.fault[key]
	mk := m.data[v.Name][key]
	m.mu.Unlock()
	if f != nil {
		if err := f(ctx); err != nil {
			return state.KeyData{}, err
		}
	}
	kd := state.KeyData{BatchWatermark: tiling.MinTime}
	if mk == nil {
		return kd, nil
	}
	kd.BatchWatermark = mk.bw
	for _, r := range mk.records {
		if r.Start+v.Span() > from && r.Start < to {
			kd.Records = append(kd.Records, r)
		}
	}
	kd.RecordsRead = len(kd.Records)
	return kd, nil
}

// fixedWatermarks is a Watermarks of a fixed table.
type fixedWatermarks map[string]int64

func (w fixedWatermarks) StreamWatermark(view string) (int64, bool) {
	ms, ok := w[view]
	return ms, ok
}

// lockedBuffer collects log output written from server goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// call makes one request and returns the status, headers and body.
func call(t testing.TB, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// errorMessage returns the "error" of a JSON error body, failing the test if
// the body is anything else.
func errorMessage(t testing.TB, body []byte) string {
	t.Helper()
	var e map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, body)
	}
	msg, ok := e["error"].(string)
	if !ok || len(e) != 1 || msg == "" {
		t.Fatalf("error body is not {\"error\": string}: %s", body)
	}
	return msg
}

// waitFor polls cond; used only for goroutine lifecycle, never for speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errStore = errors.New("pebble: /var/lib/tilestream/000123.sst: checksum mismatch")
