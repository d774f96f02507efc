package dynamo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/tilestream/tilestream/internal/dynalite"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dynalite.CloseShared()
	os.Exit(code)
}

var tableSeq atomic.Int64

// newTable creates a fresh table on the shared dynalite.
func newTable(t *testing.T) *Table {
	t.Helper()
	srv := dynalite.Shared(t)
	name := fmt.Sprintf("t%d-%s", tableSeq.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 200 {
		name = name[:200]
	}
	cfg := DefaultConfig()
	cfg.Table, cfg.Endpoint, cfg.Region = name, srv.Endpoint, "us-east-1"
	tb, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	created, err := tb.Ensure(context.Background(), true)
	if err != nil && !errors.Is(err, ErrNoTTL) {
		t.Fatal(err)
	}
	if !created {
		t.Fatalf("table %s was not created", name)
	}
	return tb
}

func item(pk, sk string, v []byte) *Item {
	it := &Item{PK: []byte(pk), SK: []byte(sk)}
	it.SetB("v", v)
	return it
}

func TestEnsureRefusesAMissingTableUnlessAskedToCreateIt(t *testing.T) {
	srv := dynalite.Shared(t)
	cfg := DefaultConfig()
	cfg.Table, cfg.Endpoint = "missing-table", srv.Endpoint
	tb, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Ensure(context.Background(), false); !errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), "init-store") {
		t.Fatalf("Ensure(create=false) on a missing table: %v, want ErrNoTable naming init-store", err)
	}
	tb2 := newTable(t)
	if created, err := tb2.Ensure(context.Background(), true); err != nil || created {
		t.Fatalf("Ensure on an existing table: created %v, err %v", created, err)
	}
}

func TestConditionalWrites(t *testing.T) {
	ctx := context.Background()
	tb := newTable(t)
	a := item("p", "a", []byte("one"))
	a.SetN("o", 10)
	if err := tb.Put(ctx, a, IfAbsent); err != nil {
		t.Fatalf("first put if absent: %v", err)
	}
	if err := tb.Put(ctx, a, IfAbsent); !errors.Is(err, ErrConditionFailed) {
		t.Fatalf("second put if absent: %v, want a failed condition", err)
	}
	// Versioned: only the writer that read version 10 wins.
	b := item("p", "a", []byte("two"))
	b.SetN("o", 20)
	if err := tb.Put(ctx, b, IfN(true, "o", "=", 9)); !errors.Is(err, ErrConditionFailed) {
		t.Fatalf("put on a stale version: %v, want a failed condition", err)
	}
	var ce *ConditionError
	if err := tb.Put(ctx, b, IfN(false, "o", "=", 11)); !errors.As(err, &ce) || !bytes.Equal(ce.Key.SK, []byte("a")) {
		t.Fatalf("put on a stale version: %v, want a *ConditionError naming the item", err)
	}
	if err := tb.Put(ctx, b, IfN(true, "o", "=", 10)); err != nil {
		t.Fatalf("put on the current version: %v", err)
	}
	got, err := tb.Get(ctx, []byte("p"), []byte("a"))
	if err != nil || got == nil || string(got.B("v")) != "two" {
		t.Fatalf("get after the versioned put: %+v %v", got, err)
	}
	if o, _ := got.N("o"); o != 20 {
		t.Fatalf("o = %d, want 20", o)
	}
	// Monotone: a lower value never replaces a higher one.
	c := item("p", "a", []byte("older"))
	c.SetN("o", 15)
	if err := tb.Put(ctx, c, IfN(true, "o", "<", 15)); !errors.Is(err, ErrConditionFailed) {
		t.Fatalf("monotone put of an older value: %v", err)
	}
	if err := tb.Delete(ctx, Key{[]byte("p"), []byte("a")}, IfN(false, "o", "=", 19)); !errors.Is(err, ErrConditionFailed) {
		t.Fatalf("conditional delete on a stale version: %v", err)
	}
	if err := tb.Delete(ctx, Key{[]byte("p"), []byte("a")}, IfN(false, "o", "=", 20)); err != nil {
		t.Fatal(err)
	}
	if got, err := tb.Get(ctx, []byte("p"), []byte("a")); err != nil || got != nil {
		t.Fatalf("get after delete: %+v %v", got, err)
	}
	if st := &tb.Metrics().Stats; st.Conditional.Load() != 5 {
		t.Errorf("failed conditions counted %d, want 5", st.Conditional.Load())
	}
}

func TestItemsOverTheLimitAreRefusedBeforeSending(t *testing.T) {
	ctx := context.Background()
	tb := newTable(t)
	big := item("p", "big", bytes.Repeat([]byte{7}, MaxItemBytes))
	before := tb.Metrics().Stats.Requests.Load()
	if err := tb.Put(ctx, big, nil); err == nil || !strings.Contains(err.Error(), "over DynamoDB's limit") {
		t.Fatalf("put of a %d-byte item: %v", big.Size(), err)
	}
	if err := tb.BatchWrite(ctx, []*Item{big}, nil); err == nil {
		t.Fatal("batch write of an oversized item succeeded")
	}
	if n := tb.Metrics().Stats.Requests.Load() - before; n != 0 {
		t.Fatalf("%d requests sent for oversized items", n)
	}
	// Just under the limit goes through (dynalite checks the same limit).
	ok := item("p", "ok", nil)
	ok.SetB("v", bytes.Repeat([]byte{7}, MaxItemBytes-ok.Size()))
	if ok.Size() != MaxItemBytes {
		t.Fatalf("size %d", ok.Size())
	}
	if err := tb.Put(ctx, ok, nil); err != nil {
		t.Fatalf("put of an item of exactly %d bytes: %v", MaxItemBytes, err)
	}
}

func TestQueryPagesAndBounds(t *testing.T) {
	ctx := context.Background()
	tb := newTable(t)
	// 300 items of 10 KB: about 3 MB, so several 1 MB pages.
	var puts []*Item
	for i := range 300 {
		puts = append(puts, item("q", fmt.Sprintf("s%03d", i), bytes.Repeat([]byte{byte(i)}, 10<<10)))
	}
	puts = append(puts, item("other", "s000", []byte("x")))
	if err := tb.BatchWrite(ctx, puts, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := tb.Query(ctx, []byte("q"), []byte("s010"), []byte("s290"), func(it *Item) error {
		got = append(got, string(it.SK))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 280 || got[0] != "s010" || got[279] != "s289" {
		t.Fatalf("query [s010, s290): %d items, %v … %v", len(got), got[:1], got[len(got)-1:])
	}
	n := 0
	if err := tb.QueryPrefix(ctx, []byte("q"), []byte("s1"), func(*Item) error { n++; return nil }); err != nil || n != 100 {
		t.Fatalf("prefix s1: %d items, %v", n, err)
	}
	n = 0
	if err := tb.Query(ctx, []byte("q"), []byte("s250"), nil, func(*Item) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("open-ended query: %d items, %v", n, err)
	}
	// Batch get across the pages, with a missing key and a duplicate.
	keys := []Key{{[]byte("q"), []byte("s007")}, {[]byte("q"), []byte("s299")}, {[]byte("q"), []byte("nope")}, {[]byte("q"), []byte("s007")}}
	for i := range 150 {
		keys = append(keys, Key{[]byte("q"), []byte(fmt.Sprintf("s%03d", i))})
	}
	items, err := tb.BatchGet(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 151 {
		t.Fatalf("batch get: %d items, want 151", len(items))
	}
	if it := items[Key{[]byte("q"), []byte("s299")}.MapKey()]; it == nil || it.B("v")[0] != byte(299%256) {
		t.Fatalf("batch get s299: %+v", it)
	}
	// Deletes in a batch.
	var dels []Key
	for i := range 300 {
		dels = append(dels, Key{[]byte("q"), []byte(fmt.Sprintf("s%03d", i))})
	}
	if err := tb.BatchWrite(ctx, nil, dels); err != nil {
		t.Fatal(err)
	}
	n = 0
	if err := tb.QueryPrefix(ctx, []byte("q"), nil, func(*Item) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("after deleting everything: %d items, %v", n, err)
	}
}

// flaky wraps an API and leaves part of every batch unprocessed, the way
// DynamoDB does under throttling (dynalite never does), or fails calls with
// a throttling error.
type flaky struct {
	API
	unprocessed atomic.Int64 // batches left to answer with unprocessed items
	throttle    atomic.Int64 // calls left to fail with a throttling error
	calls       atomic.Int64
}

func (f *flaky) BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error) {
	f.calls.Add(1)
	if f.throttle.Add(-1) >= 0 {
		return nil, &smithy.GenericAPIError{Code: "ProvisionedThroughputExceededException", Message: "slow down", Fault: smithy.FaultClient}
	}
	for name, reqs := range in.RequestItems {
		if len(reqs) > 1 && f.unprocessed.Add(-1) >= 0 {
			// Write the first half, hand back the second.
			half := len(reqs) / 2
			if _, err := f.API.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{name: reqs[:half]}}, o...); err != nil {
				return nil, err
			}
			return &dynamodb.BatchWriteItemOutput{UnprocessedItems: map[string][]types.WriteRequest{name: reqs[half:]}}, nil
		}
	}
	return f.API.BatchWriteItem(ctx, in, o...)
}

func (f *flaky) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	for name, ka := range in.RequestItems {
		if len(ka.Keys) > 1 && f.unprocessed.Add(-1) >= 0 {
			half := len(ka.Keys) / 2
			first := ka
			first.Keys = ka.Keys[:half]
			out, err := f.API.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{name: first}}, o...)
			if err != nil {
				return nil, err
			}
			rest := ka
			rest.Keys = ka.Keys[half:]
			out.UnprocessedKeys = map[string]types.KeysAndAttributes{name: rest}
			return out, nil
		}
	}
	return f.API.BatchGetItem(ctx, in, o...)
}

func TestBatchWriteResendsUnprocessedItems(t *testing.T) {
	ctx := context.Background()
	base := newTable(t)
	f := &flaky{API: base.api}
	tb := New(f, base.cfg, nil)
	tb.SetBackoff(Backoff{Base: time.Millisecond, Cap: 5 * time.Millisecond, Attempts: 20})
	f.unprocessed.Store(12)
	var puts []*Item
	for i := range 100 {
		puts = append(puts, item("u", fmt.Sprintf("%03d", i), []byte{byte(i)}))
	}
	if err := tb.BatchWrite(ctx, puts, nil); err != nil {
		t.Fatal(err)
	}
	st := &tb.Metrics().Stats
	if st.Unprocessed.Load() == 0 {
		t.Fatal("the fake left nothing unprocessed")
	}
	if st.ItemsPut.Load() != 100 {
		t.Errorf("items put %d, want 100", st.ItemsPut.Load())
	}
	f.unprocessed.Store(6)
	keys := make([]Key, 100)
	for i := range keys {
		keys[i] = Key{[]byte("u"), []byte(fmt.Sprintf("%03d", i))}
	}
	items, err := tb.BatchGet(ctx, keys)
	if err != nil || len(items) != 100 {
		t.Fatalf("batch get after unprocessed keys: %d items, %v", len(items), err)
	}

	// A server that never processes everything: the call gives up with
	// ErrUnprocessed, a throttling reason the caller retries later.
	tb.SetBackoff(Backoff{Base: time.Millisecond, Cap: 2 * time.Millisecond, Attempts: 3})
	f.unprocessed.Store(1 << 30)
	err = tb.BatchWrite(ctx, puts[:10], nil)
	if !errors.Is(err, ErrUnprocessed) || Reason(err) != "throttled" || !Retryable(err) {
		t.Fatalf("batch write against a server that never catches up: %v (reason %q)", err, Reason(err))
	}
	f.unprocessed.Store(0)

	// A throttling error is classified as such and retryable.
	f.throttle.Store(1)
	err = tb.BatchWrite(ctx, puts[:10], nil)
	if Reason(err) != "throttled" || !Retryable(err) {
		t.Fatalf("throttled batch write: %v (reason %q)", err, Reason(err))
	}
}

func TestUnreachableServerIsRetryable(t *testing.T) {
	srv := dynalite.Start(t, dynalite.Options{})
	cfg := DefaultConfig()
	cfg.Table, cfg.Endpoint, cfg.MaxAttempts, cfg.MaxBackoff = "gone-table", srv.Endpoint, 2, 10*time.Millisecond
	tb, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Ensure(context.Background(), true); err != nil && !errors.Is(err, ErrNoTTL) {
		t.Fatal(err)
	}
	srv.Stop()
	_, err = tb.Get(context.Background(), []byte("p"), []byte("s"))
	if err == nil || Reason(err) != "unavailable" || !Retryable(err) {
		t.Fatalf("get from a stopped server: %v (reason %q)", err, Reason(err))
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// In memory: the table is gone with the server, and says so.
	_, err = tb.Get(context.Background(), []byte("p"), []byte("s"))
	if err == nil || Retryable(err) {
		t.Fatalf("get from a restarted in-memory server: %v, want a non-retryable missing table", err)
	}
}

func TestUpdateSetsAndRemovesAttributes(t *testing.T) {
	ctx := context.Background()
	tb := newTable(t)
	set := &Item{PK: []byte("a"), SK: []byte("1")}
	set.SetB("pr", []byte("progress"))
	set.SetB("in", []byte("intent"))
	if err := tb.Update(ctx, set, nil, nil); err != nil {
		t.Fatal(err)
	}
	set = &Item{PK: []byte("a"), SK: []byte("1")}
	set.SetB("pr", []byte("next"))
	set.SetN("n", 7)
	if err := tb.Update(ctx, set, []string{"in"}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := tb.Get(ctx, []byte("a"), []byte("1"))
	if err != nil || got == nil || string(got.B("pr")) != "next" || got.B("in") != nil {
		t.Fatalf("after set and remove: %+v %v", got, err)
	}
	// Binary clauses: an owner check, as a lease uses.
	owner := &Cond{IfAbsent: true, Or: []Clause{{Attr: "pr", Op: "=", B: []byte("other")}, {Attr: "n", Op: "<", N: 5}}}
	if err := tb.Update(ctx, set, nil, owner); !errors.Is(err, ErrConditionFailed) {
		t.Fatalf("update under a failing owner condition: %v", err)
	}
	owner.Or[0].B = []byte("next")
	if err := tb.Update(ctx, set, nil, owner); err != nil {
		t.Fatalf("update under a holding owner condition: %v", err)
	}
}
