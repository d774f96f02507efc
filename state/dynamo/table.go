// Package dynamo is the DynamoDB table layer of the online store: one table
// with a binary partition key pk and a binary sort key sk, conditional
// single-item writes, paginated queries, and batch reads and writes that
// resend what the server leaves unprocessed. It knows nothing of tiles;
// package state lays its records out on it (docs/format.md).
//
// Every read is strongly consistent. Writes are never transactions (the
// local test server, dynalite, has none): callers order their writes so
// that any prefix of them is a state readers and the next writer handle.
package dynamo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/logging"
	"golang.org/x/sync/errgroup"
)

// API is the part of the DynamoDB client the table calls.
type API interface {
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	BatchWriteItem(context.Context, *dynamodb.BatchWriteItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
	BatchGetItem(context.Context, *dynamodb.BatchGetItemInput, ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
}

// Config configures the table's client.
type Config struct {
	// Table is the table name. Required.
	Table string
	// Region is the AWS region; "" takes it from the environment and
	// shared config (the SDK's standard chain), else us-east-1.
	Region string
	// Endpoint, when set, replaces the AWS endpoint (DynamoDB Local,
	// dynalite). Credentials still come from the standard chain; when the
	// chain has none, static dummy ones are used, which local servers accept.
	Endpoint string
	// MaxAttempts bounds the SDK's attempts per call (its own retries of
	// throttling and transient errors, with jittered exponential backoff).
	// Default 4. The SDK's client-side retry quota is off: a throttling
	// burst slows calls down and, past MaxAttempts, fails them back to the
	// caller's own backoff loop; it never fails every call at once.
	MaxAttempts int
	// MaxBackoff caps the SDK's backoff between attempts. Default 1s.
	MaxBackoff time.Duration
	// CallTimeout bounds one call, the SDK's retries included. Default 20s.
	CallTimeout time.Duration
	// Parallel bounds the calls one batch operation has in flight.
	// Default 16.
	Parallel int
	// Wrap, when set, wraps the SDK client: tests inject the faults a
	// local server cannot show (throttling, unprocessed items).
	Wrap func(API) API
}

// DefaultConfig returns the defaults; Table must still be set.
func DefaultConfig() Config {
	return Config{MaxAttempts: 4, MaxBackoff: time.Second, CallTimeout: 20 * time.Second, Parallel: 16}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if n := len(c.Table); n < 3 || n > 255 {
		errs = append(errs, fmt.Errorf("dynamodb: table name %q must have 3 to 255 characters", c.Table))
	}
	if c.MaxAttempts < 0 || c.Parallel < 0 || c.MaxBackoff < 0 || c.CallTimeout < 0 {
		errs = append(errs, errors.New("dynamodb: max attempts, backoff, call timeout and parallelism must not be negative"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = d.CallTimeout
	}
	if c.Parallel == 0 {
		c.Parallel = d.Parallel
	}
	return c
}

// Table is one DynamoDB table. It is safe for concurrent use.
type Table struct {
	api     API
	name    string
	cfg     Config
	m       *Metrics
	backoff Backoff
}

// Open builds the SDK client from the standard credential chain (with
// static dummy credentials against an endpoint when the chain has none) and
// returns the table. It does not call DynamoDB (see Ensure).
func Open(ctx context.Context, cfg Config, m *Metrics) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := []func(*awsconfig.LoadOptions) error{
		// Failures come back as errors, which the store classifies and
		// counts; the SDK's own log lines (to stderr) would say it twice.
		awsconfig.WithLogger(logging.Nop{}),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = cfg.MaxBackoff
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.Endpoint != "" && !strings.Contains(cfg.Endpoint, ".amazonaws.com") {
		// A local server (DynamoDB Local, dynalite): no EC2 instance
		// metadata to ask for credentials.
		opts = append(opts, awsconfig.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("dynamodb: aws config: %w", err)
	}
	if ac.Region == "" {
		ac.Region = "us-east-1"
	}
	if cfg.Endpoint != "" {
		// A local server needs some credentials to sign with; it checks none.
		if _, err := ac.Credentials.Retrieve(ctx); err != nil {
			ac.Credentials = credentials.NewStaticCredentialsProvider("local", "local", "")
		}
	}
	client := dynamodb.NewFromConfig(ac, func(o *dynamodb.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	var api API = client
	if cfg.Wrap != nil {
		api = cfg.Wrap(api)
	}
	return New(api, cfg, m), nil
}

// New returns the table over api (tests inject faults this way).
func New(api API, cfg Config, m *Metrics) *Table {
	if m == nil {
		m = NewMetrics(nil)
	}
	cfg = cfg.withDefaults()
	return &Table{api: api, name: cfg.Table, cfg: cfg, m: m, backoff: DefaultBackoff()}
}

// Name returns the table name.
func (t *Table) Name() string { return t.name }

// Metrics returns the table's metrics.
func (t *Table) Metrics() *Metrics { return t.m }

// SetBackoff replaces the backoff of unprocessed-item retries (tests).
func (t *Table) SetBackoff(b Backoff) { t.backoff = b }

func (t *Table) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.cfg.CallTimeout)
}

// Get reads one item (strongly consistent); nil when absent.
func (t *Table) Get(ctx context.Context, pk, sk []byte) (*Item, error) {
	ctx, cancel := t.call(ctx)
	defer cancel()
	t.m.request("GetItem", false)
	start := time.Now()
	out, err := t.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      &t.name,
		Key:            Key{pk, sk}.marshal(),
		ConsistentRead: aws.Bool(true),
	})
	t.m.duration.WithLabelValues("GetItem").Observe(time.Since(start).Seconds())
	if err != nil {
		t.m.failed("GetItem", err)
		return nil, fmt.Errorf("get %x/%x: %w", pk, sk, err)
	}
	if len(out.Item) == 0 {
		t.m.read("GetItem", 1)
		return nil, nil
	}
	it, err := unmarshal(out.Item)
	if err != nil {
		return nil, err
	}
	t.m.read("GetItem", ReadUnits(it.Size()))
	t.m.Stats.ItemsRead.Add(1)
	return it, nil
}

// Cond is a condition on the stored item of a write: it holds when the item
// is absent (and IfAbsent is set) or when any of the clauses holds.
type Cond struct {
	IfAbsent bool
	Or       []Clause
}

// Clause compares a stored attribute with a value: numeric (N) unless B is
// set; Op is one of = <> < <= > >=. A missing attribute fails every clause.
type Clause struct {
	Attr string
	Op   string
	N    int64
	B    []byte
}

// IfAbsent is the condition that the item does not exist.
var IfAbsent = &Cond{IfAbsent: true}

// IfN is the condition that numeric attribute attr compares to n by op, or,
// with absent, that the item does not exist.
func IfN(absent bool, attr, op string, n int64) *Cond {
	return &Cond{IfAbsent: absent, Or: []Clause{{Attr: attr, Op: op, N: n}}}
}

func (c *Cond) expression() (expr *string, names map[string]string, values map[string]types.AttributeValue) {
	if c == nil {
		return nil, nil, nil
	}
	var parts []string
	if c.IfAbsent {
		parts = append(parts, "attribute_not_exists(pk)")
	}
	for i, cl := range c.Or {
		if names == nil {
			names, values = map[string]string{}, map[string]types.AttributeValue{}
		}
		n, v := fmt.Sprintf("#c%d", i), fmt.Sprintf(":c%d", i)
		names[n] = cl.Attr
		if cl.B != nil {
			values[v] = &types.AttributeValueMemberB{Value: cl.B}
		} else {
			values[v] = &types.AttributeValueMemberN{Value: fmt.Sprint(cl.N)}
		}
		parts = append(parts, n+" "+cl.Op+" "+v)
	}
	s := strings.Join(parts, " OR ")
	return &s, names, values
}

// Put writes it whole, replacing any stored item, when c (nil: always)
// holds. A failed condition returns a *ConditionError.
func (t *Table) Put(ctx context.Context, it *Item, c *Cond) error {
	size := it.Size()
	if size > MaxItemBytes {
		return fmt.Errorf("put %s: item of %d bytes is over DynamoDB's limit of %d", it.Key(), size, MaxItemBytes)
	}
	expr, names, values := c.expression()
	in := &dynamodb.PutItemInput{
		TableName:                 &t.name,
		Item:                      it.marshal(),
		ConditionExpression:       expr,
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}
	if c != nil {
		in.ReturnValuesOnConditionCheckFailure = types.ReturnValuesOnConditionCheckFailureAllOld
	}
	ctx, cancel := t.call(ctx)
	defer cancel()
	t.m.request("PutItem", true)
	start := time.Now()
	_, err := t.api.PutItem(ctx, in)
	t.m.duration.WithLabelValues("PutItem").Observe(time.Since(start).Seconds())
	// A write consumes capacity whether or not its condition holds.
	t.m.wrote("PutItem", WriteUnits(size))
	if err != nil {
		return t.writeError("PutItem", it.Key(), err)
	}
	t.m.Stats.ItemsPut.Add(1)
	return nil
}

func (t *Table) writeError(op string, k Key, err error) error {
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		t.m.failed(op, ErrConditionFailed)
		ce := &ConditionError{Key: k}
		if len(ccf.Item) > 0 {
			ce.Current, _ = unmarshal(ccf.Item)
		}
		return ce
	}
	t.m.failed(op, err)
	return fmt.Errorf("%s %s: %w", op, k, err)
}

// Update sets the attributes of set (its key names the item, which is
// created if absent) and removes the attributes named in remove, when c
// (nil: always) holds. It returns the item's size after the update.
func (t *Table) Update(ctx context.Context, set *Item, remove []string, c *Cond) error {
	expr, names, values := c.expression()
	if names == nil {
		names, values = map[string]string{}, map[string]types.AttributeValue{}
	}
	var sets, rems []string
	i := 0
	for k, v := range set.Bin {
		n, val := fmt.Sprintf("#u%d", i), fmt.Sprintf(":u%d", i)
		names[n], values[val] = k, &types.AttributeValueMemberB{Value: v}
		sets = append(sets, n+" = "+val)
		i++
	}
	for k, v := range set.Num {
		n, val := fmt.Sprintf("#u%d", i), fmt.Sprintf(":u%d", i)
		names[n], values[val] = k, &types.AttributeValueMemberN{Value: fmt.Sprint(v)}
		sets = append(sets, n+" = "+val)
		i++
	}
	for _, k := range remove {
		n := fmt.Sprintf("#u%d", i)
		names[n] = k
		rems = append(rems, n)
		i++
	}
	var update string
	if len(sets) > 0 {
		update = "SET " + strings.Join(sets, ", ")
	}
	if len(rems) > 0 {
		if update != "" {
			update += " "
		}
		update += "REMOVE " + strings.Join(rems, ", ")
	}
	if len(values) == 0 {
		values = nil
	}
	ctx, cancel := t.call(ctx)
	defer cancel()
	t.m.request("UpdateItem", true)
	start := time.Now()
	out, err := t.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 &t.name,
		Key:                       set.Key().marshal(),
		UpdateExpression:          &update,
		ConditionExpression:       expr,
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	t.m.duration.WithLabelValues("UpdateItem").Observe(time.Since(start).Seconds())
	if err != nil {
		t.m.wrote("UpdateItem", WriteUnits(set.Size()))
		return t.writeError("UpdateItem", set.Key(), err)
	}
	size := set.Size()
	if it, err := unmarshal(out.Attributes); err == nil {
		size = max(size, it.Size())
	}
	t.m.wrote("UpdateItem", WriteUnits(size))
	return nil
}

// Delete deletes one item when c (nil: always) holds.
func (t *Table) Delete(ctx context.Context, k Key, c *Cond) error {
	expr, names, values := c.expression()
	ctx, cancel := t.call(ctx)
	defer cancel()
	t.m.request("DeleteItem", true)
	start := time.Now()
	_, err := t.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 &t.name,
		Key:                       k.marshal(),
		ConditionExpression:       expr,
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	})
	t.m.duration.WithLabelValues("DeleteItem").Observe(time.Since(start).Seconds())
	t.m.wrote("DeleteItem", 1)
	if err != nil {
		return t.writeError("DeleteItem", k, err)
	}
	return nil
}

// Query calls fn for every item of partition pk whose sort key is in
// [from, to) (to nil: no upper bound), in sort-key order, page by page
// (strongly consistent). fn must not keep the item past the call unless
// it owns it (it does: items are fresh).
func (t *Table) Query(ctx context.Context, pk, from, to []byte, fn func(*Item) error) error {
	var cond string
	values := map[string]types.AttributeValue{":pk": &types.AttributeValueMemberB{Value: pk}}
	switch {
	case to == nil:
		cond = "pk = :pk AND sk >= :from"
		values[":from"] = &types.AttributeValueMemberB{Value: from}
	default:
		// BETWEEN is inclusive; the item at exactly `to` is dropped below.
		cond = "pk = :pk AND sk BETWEEN :from AND :to"
		values[":from"] = &types.AttributeValueMemberB{Value: from}
		values[":to"] = &types.AttributeValueMemberB{Value: to}
	}
	return t.query(ctx, pk, cond, values, func(it *Item) error {
		if to != nil && bytes.Equal(it.SK, to) {
			return nil
		}
		return fn(it)
	})
}

// QueryPrefix calls fn for every item of partition pk whose sort key starts
// with prefix, in order.
func (t *Table) QueryPrefix(ctx context.Context, pk, prefix []byte, fn func(*Item) error) error {
	values := map[string]types.AttributeValue{":pk": &types.AttributeValueMemberB{Value: pk}}
	cond := "pk = :pk"
	if len(prefix) > 0 {
		cond += " AND begins_with(sk, :p)"
		values[":p"] = &types.AttributeValueMemberB{Value: prefix}
	}
	return t.query(ctx, pk, cond, values, fn)
}

func (t *Table) query(ctx context.Context, pk []byte, cond string, values map[string]types.AttributeValue, fn func(*Item) error) error {
	in := &dynamodb.QueryInput{
		TableName:                 &t.name,
		KeyConditionExpression:    &cond,
		ExpressionAttributeValues: values,
		ConsistentRead:            aws.Bool(true),
	}
	for {
		cctx, cancel := t.call(ctx)
		t.m.request("Query", false)
		start := time.Now()
		out, err := t.api.Query(cctx, in)
		cancel()
		t.m.duration.WithLabelValues("Query").Observe(time.Since(start).Seconds())
		if err != nil {
			t.m.failed("Query", err)
			return fmt.Errorf("query %x: %w", pk, err)
		}
		size := 0
		for _, m := range out.Items {
			it, err := unmarshal(m)
			if err != nil {
				return err
			}
			size += it.Size()
			t.m.Stats.ItemsRead.Add(1)
			if err := fn(it); err != nil {
				return err
			}
		}
		t.m.read("Query", ReadUnits(size))
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// Backoff is a capped exponential backoff with full jitter.
type Backoff struct {
	Base, Cap time.Duration
	// Attempts bounds the resends of unprocessed items.
	Attempts int
}

// DefaultBackoff is 25 ms doubling to 2 s, 12 attempts (about 15 s in all).
func DefaultBackoff() Backoff {
	return Backoff{Base: 25 * time.Millisecond, Cap: 2 * time.Second, Attempts: 12}
}

// Delay returns the wait before attempt n (1-based).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Base << min(n-1, 30)
	if d > b.Cap || d <= 0 {
		d = b.Cap
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// BatchWrite puts and deletes items, unconditionally, in BatchWriteItem
// calls of at most 25 (at most Parallel calls at once), resending what the
// server leaves unprocessed after a capped, jittered exponential backoff.
// No order holds between the items: callers write what must come later in a
// later call.
func (t *Table) BatchWrite(ctx context.Context, puts []*Item, dels []Key) error {
	var reqs []types.WriteRequest
	var sizes []int
	seen := map[string]int{}
	add := func(k Key, r types.WriteRequest, size int) {
		// A batch may not name one item twice: the last write wins.
		if i, ok := seen[k.MapKey()]; ok {
			reqs[i], sizes[i] = r, size
			return
		}
		seen[k.MapKey()] = len(reqs)
		reqs = append(reqs, r)
		sizes = append(sizes, size)
	}
	for _, k := range dels {
		add(k, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: k.marshal()}}, 1)
	}
	for _, it := range puts {
		size := it.Size()
		if size > MaxItemBytes {
			return fmt.Errorf("batch write %s: item of %d bytes is over DynamoDB's limit of %d", it.Key(), size, MaxItemBytes)
		}
		add(it.Key(), types.WriteRequest{PutRequest: &types.PutRequest{Item: it.marshal()}}, size)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(t.cfg.Parallel)
	for i := 0; i < len(reqs); i += 25 {
		chunk, chunkSizes := reqs[i:min(i+25, len(reqs))], sizes[i:min(i+25, len(reqs))]
		g.Go(func() error { return t.batchWrite(gctx, chunk, chunkSizes) })
	}
	return g.Wait()
}

func (t *Table) batchWrite(ctx context.Context, reqs []types.WriteRequest, sizes []int) error {
	var units int64
	puts := 0
	for i, s := range sizes {
		units += WriteUnits(s)
		if reqs[i].PutRequest != nil {
			puts++
		}
	}
	for attempt := 1; ; attempt++ {
		cctx, cancel := t.call(ctx)
		t.m.request("BatchWriteItem", true)
		start := time.Now()
		out, err := t.api.BatchWriteItem(cctx, &dynamodb.BatchWriteItemInput{
			RequestItems: map[string][]types.WriteRequest{t.name: reqs},
		})
		cancel()
		t.m.duration.WithLabelValues("BatchWriteItem").Observe(time.Since(start).Seconds())
		if err != nil {
			t.m.failed("BatchWriteItem", err)
			return fmt.Errorf("batch write of %d items: %w", len(reqs), err)
		}
		left := out.UnprocessedItems[t.name]
		// Unprocessed items are not written and consume nothing; the
		// processed ones are counted now, the rest when resent.
		if len(left) == 0 {
			t.m.wrote("BatchWriteItem", units)
			t.m.Stats.ItemsPut.Add(int64(puts))
			return nil
		}
		done := len(reqs) - len(left)
		processed := units * int64(done) / int64(len(reqs))
		t.m.wrote("BatchWriteItem", processed)
		units -= processed
		putsLeft := 0
		for _, r := range left {
			if r.PutRequest != nil {
				putsLeft++
			}
		}
		t.m.Stats.ItemsPut.Add(int64(puts - putsLeft))
		puts = putsLeft
		t.m.retries.Add(float64(len(left)))
		t.m.Stats.Unprocessed.Add(int64(len(left)))
		if attempt >= t.backoff.Attempts {
			t.m.failed("BatchWriteItem", ErrUnprocessed)
			return fmt.Errorf("batch write: %d of %d items: %w", len(left), len(reqs), ErrUnprocessed)
		}
		reqs = left
		if err := sleep(ctx, t.backoff.Delay(attempt)); err != nil {
			return err
		}
	}
}

// BatchGet reads items by key (strongly consistent) in BatchGetItem calls of
// at most 100, resending unprocessed keys after a backoff. The result maps
// Key.MapKey() to the item; absent items are missing from it.
func (t *Table) BatchGet(ctx context.Context, keys []Key) (map[string]*Item, error) {
	out := make(map[string]*Item, len(keys))
	var mu sync.Mutex
	uniq := make([]Key, 0, len(keys))
	seen := map[string]bool{}
	for _, k := range keys {
		if !seen[k.MapKey()] {
			seen[k.MapKey()] = true
			uniq = append(uniq, k)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(t.cfg.Parallel)
	for i := 0; i < len(uniq); i += 100 {
		chunk := uniq[i:min(i+100, len(uniq))]
		g.Go(func() error {
			items, err := t.batchGet(gctx, chunk)
			if err != nil {
				return err
			}
			mu.Lock()
			for _, it := range items {
				out[keyString(it.PK, it.SK)] = it
			}
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

func (t *Table) batchGet(ctx context.Context, keys []Key) ([]*Item, error) {
	ka := &types.KeysAndAttributes{ConsistentRead: aws.Bool(true)}
	for _, k := range keys {
		ka.Keys = append(ka.Keys, k.marshal())
	}
	var items []*Item
	for attempt := 1; ; attempt++ {
		cctx, cancel := t.call(ctx)
		t.m.request("BatchGetItem", false)
		start := time.Now()
		out, err := t.api.BatchGetItem(cctx, &dynamodb.BatchGetItemInput{
			RequestItems: map[string]types.KeysAndAttributes{t.name: *ka},
		})
		cancel()
		t.m.duration.WithLabelValues("BatchGetItem").Observe(time.Since(start).Seconds())
		if err != nil {
			t.m.failed("BatchGetItem", err)
			return nil, fmt.Errorf("batch get of %d items: %w", len(ka.Keys), err)
		}
		var units int64
		for _, m := range out.Responses[t.name] {
			it, err := unmarshal(m)
			if err != nil {
				return nil, err
			}
			units += ReadUnits(it.Size())
			t.m.Stats.ItemsRead.Add(1)
			items = append(items, it)
		}
		t.m.read("BatchGetItem", units)
		left, ok := out.UnprocessedKeys[t.name]
		if !ok || len(left.Keys) == 0 {
			return items, nil
		}
		t.m.retries.Add(float64(len(left.Keys)))
		t.m.Stats.Unprocessed.Add(int64(len(left.Keys)))
		if attempt >= t.backoff.Attempts {
			t.m.failed("BatchGetItem", ErrUnprocessed)
			return nil, fmt.Errorf("batch get: %d keys: %w", len(left.Keys), ErrUnprocessed)
		}
		ka.Keys = left.Keys
		if err := sleep(ctx, t.backoff.Delay(attempt)); err != nil {
			return nil, err
		}
	}
}

// TTLAttribute is the numeric attribute (Unix seconds) that DynamoDB's time
// to live, when enabled on the table, expires items by.
const TTLAttribute = "ttl"

// Ensure checks that the table exists with tilestream's key schema; when it
// does not exist and create is set, it creates it (on-demand capacity), waits
// until it is active and enables time to live on TTLAttribute (servers
// without TTL, like dynalite, are told once and go on without it).
func (t *Table) Ensure(ctx context.Context, create bool) (created bool, err error) {
	out, err := t.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &t.name})
	var nf *types.ResourceNotFoundException
	switch {
	case errors.As(err, &nf):
		if !create {
			return false, fmt.Errorf("%w: %s (set store.dynamodb.create_table: true, or run `tilestream init-store`)", ErrNoTable, t.name)
		}
		err := t.create(ctx)
		return err == nil || errors.Is(err, ErrNoTTL), err
	case err != nil:
		return false, fmt.Errorf("describe table %s: %w", t.name, err)
	}
	return false, checkSchema(out.Table)
}

func checkSchema(d *types.TableDescription) error {
	want := map[string]types.KeyType{AttrPK: types.KeyTypeHash, AttrSK: types.KeyTypeRange}
	if len(d.KeySchema) != 2 {
		return fmt.Errorf("table %s: key schema has %d attributes; tilestream needs pk (HASH, binary) and sk (RANGE, binary)", aws.ToString(d.TableName), len(d.KeySchema))
	}
	for _, k := range d.KeySchema {
		if want[aws.ToString(k.AttributeName)] != k.KeyType {
			return fmt.Errorf("table %s: key %s is %s; tilestream needs pk (HASH, binary) and sk (RANGE, binary)", aws.ToString(d.TableName), aws.ToString(k.AttributeName), k.KeyType)
		}
	}
	for _, a := range d.AttributeDefinitions {
		if _, ok := want[aws.ToString(a.AttributeName)]; ok && a.AttributeType != types.ScalarAttributeTypeB {
			return fmt.Errorf("table %s: key attribute %s is of type %s; tilestream needs binary (B)", aws.ToString(d.TableName), aws.ToString(a.AttributeName), a.AttributeType)
		}
	}
	return nil
}

func (t *Table) create(ctx context.Context) error {
	_, err := t.api.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: &t.name,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(AttrPK), AttributeType: types.ScalarAttributeTypeB},
			{AttributeName: aws.String(AttrSK), AttributeType: types.ScalarAttributeTypeB},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrSK), KeyType: types.KeyTypeRange},
		},
		BillingMode: types.BillingModePayPerRequest,
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) { // another instance created it first
		return fmt.Errorf("create table %s: %w", t.name, err)
	}
	for {
		out, err := t.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &t.name})
		if err != nil {
			return fmt.Errorf("describe table %s: %w", t.name, err)
		}
		if out.Table.TableStatus == types.TableStatusActive {
			break
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	_, err = t.api.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: &t.name,
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(TTLAttribute), Enabled: aws.Bool(true),
		},
	})
	if err != nil {
		return fmt.Errorf("%w: enable time to live on %s: %w", ErrNoTTL, t.name, err)
	}
	return nil
}

// ErrNoTTL wraps a failure to enable time to live on a new table: the table
// works without it (TTL is only a backstop).
var ErrNoTTL = errors.New("dynamo: time to live not enabled")
