package state

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tilestream/tilestream/state/dynamo"
)

// DynamoConfig configures the DynamoDB online store.
type DynamoConfig struct {
	// Table configures the table and its client. Table.Table is required.
	Table dynamo.Config
	// CreateTable creates the table when it does not exist. Default false:
	// a missing table is an error naming `tilestream init-store`.
	CreateTable bool
	// TTL, when positive, stamps every stream tile item and hour segment
	// with an expiry this far ahead (attribute ttl, Unix seconds; a segment
	// is stamped again at each roll-up into it), a backstop for garbage the
	// healer failed to delete: it must exceed any heal stall you would
	// tolerate, since an expired tile is lost. Default 0 (none).
	TTL time.Duration
	// CachePath is the Pebble local cache's directory; "" runs without a
	// cache (every read goes to DynamoDB).
	CachePath string
	// CacheMaxBytes bounds the local cache's size. Default 1 GiB.
	CacheMaxBytes int64
	// Staleness is the longest a cached key snapshot is served before it is
	// read again from DynamoDB. Default 2s. Keep it under half the healer's
	// grace period.
	Staleness time.Duration
	// RollupShare is the largest share of the time that roll-ups of stream
	// tiles into hour segments may take (docs/format.md), so that a backlog
	// catches up first and is rolled up after. Default 0.25; 1 or more: no
	// limit.
	RollupShare float64
	// CollectRate bounds the items per second that the collection of a
	// view's old incarnation scans (a scan of the whole table) and so
	// deletes, so that it leaves the table's capacity to the service.
	// Default 1000; at least 100 (a page of the scan must come within a
	// third of the collection's lease).
	CollectRate int
	// Registerer receives the store's metrics; nil counts them without
	// exporting.
	Registerer prometheus.Registerer
}

// Validate reports every problem at once.
func (c DynamoConfig) Validate() error {
	var errs []error
	if err := c.Table.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.TTL < 0 || c.CacheMaxBytes < 0 || c.Staleness < 0 || c.RollupShare < 0 {
		errs = append(errs, errors.New("dynamodb: ttl, cache size, staleness and roll-up share must not be negative"))
	}
	if c.CollectRate != 0 && c.CollectRate < MinCollectRate {
		errs = append(errs, fmt.Errorf("dynamodb: collect rate %d items/s: want at least %d", c.CollectRate, MinCollectRate))
	}
	return errors.Join(errs...)
}

// dynStore is the DynamoDB online store behind a Store (docs/format.md).
type dynStore struct {
	t     *dynamo.Table
	cache *localCache // nil: none
	ttl   time.Duration
	log   *slog.Logger
	m     *dynMetrics
	roll  rollups

	// Layout translations (dynamo_layout.go): this instance's name in
	// their leases, the lease, how often a waiting instance looks again,
	// the items a scan page evaluates, and a hook after each page (tests).
	owner          string
	translateLease time.Duration
	translatePoll  time.Duration
	translatePage  int32
	collectRate    int // items scanned per second by a collection
	testPageHook   func(page int) error

	mu struct {
		sync.Mutex
		inc map[string]uint32 // view → incarnation
	}
}

// OpenDynamo opens the DynamoDB online store: it checks (or creates) the
// table and opens the local cache, rebuilding it when it cannot be opened.
func OpenDynamo(ctx context.Context, cfg DynamoConfig, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Staleness == 0 {
		cfg.Staleness = 2 * time.Second
	}
	if cfg.CacheMaxBytes == 0 {
		cfg.CacheMaxBytes = 1 << 30
	}
	t, err := dynamo.Open(ctx, cfg.Table, dynamo.NewMetrics(cfg.Registerer))
	if err != nil {
		return nil, err
	}
	created, err := t.Ensure(ctx, cfg.CreateTable)
	switch {
	case errors.Is(err, dynamo.ErrNoTTL):
		log.Warn("the new table has no time to live (the server does not support it); the ttl backstop is off", "table", t.Name(), "err", err)
	case err != nil:
		return nil, err
	}
	if created {
		log.Info("created the DynamoDB table", "table", t.Name())
	}
	if cfg.RollupShare == 0 {
		cfg.RollupShare = 0.25
	}
	d := &dynStore{t: t, ttl: cfg.TTL, log: log, m: newDynMetrics(cfg.Registerer)}
	d.roll.share = cfg.RollupShare
	d.owner = newOwner(cfg.CachePath)
	d.translateLease, d.translatePoll, d.translatePage = defaultTranslateLease, defaultTranslatePoll, defaultTranslatePage
	d.collectRate = cfg.CollectRate
	if d.collectRate == 0 {
		d.collectRate = DefaultCollectRate
	}
	d.mu.inc = map[string]uint32{}
	if cfg.CachePath != "" {
		if d.cache, err = openLocalCache(cfg.CachePath, t.Name(), cfg.CacheMaxBytes, cfg.Staleness, d.m, log); err != nil {
			return nil, err
		}
	}
	return &Store{dyn: d, log: log}, nil
}

// InitDynamo creates the table (if needed) and returns whether it did.
func InitDynamo(ctx context.Context, cfg dynamo.Config) (bool, error) {
	t, err := dynamo.Open(ctx, cfg, nil)
	if err != nil {
		return false, err
	}
	return t.Ensure(ctx, true)
}

// Table returns the DynamoDB table of a DynamoDB store (nil for Pebble), for
// its traffic counters.
func (s *Store) Table() *dynamo.Table {
	if s.dyn == nil {
		return nil
	}
	return s.dyn.t
}

func (d *dynStore) close() error {
	if d.cache != nil {
		return d.cache.close()
	}
	return nil
}

// ctx bounds store calls made through the context-free parts of the Store
// API (the SDK bounds each call; this bounds a whole operation).
func opCtx() (context.Context, context.CancelFunc) { return opCtxIn(context.Background()) }

// opCtxIn is opCtx within ctx.
func opCtxIn(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 2*time.Minute)
}

// ---------------------------------------------------------------------------
// Layout and incarnations

// The layout item of a view holds its fingerprint (with rebuildMark while
// a rebuild runs) in v and its incarnation in inc: a random number in every
// key of the view's items. A layout change picks a new incarnation, so the
// old layout's items are never read again without deleting them first.

func (d *dynStore) incarnation(view string) (uint32, error) {
	d.mu.Lock()
	inc, ok := d.mu.inc[view]
	d.mu.Unlock()
	if ok {
		return inc, nil
	}
	ctx, cancel := opCtx()
	defer cancel()
	it, err := d.t.Get(ctx, layoutPK(view), dskLay)
	if err != nil {
		return 0, fmt.Errorf("read layout of view %s: %w", view, err)
	}
	if it == nil {
		return 0, fmt.Errorf("view %s has no layout in table %s: CheckLayout first", view, d.t.Name())
	}
	inc = incOf(it)
	d.setInc(view, inc)
	return inc, nil
}

func incOf(it *dynamo.Item) uint32 {
	b := it.B("inc")
	if len(b) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (d *dynStore) setInc(view string, inc uint32) {
	d.mu.Lock()
	d.mu.inc[view] = inc
	d.mu.Unlock()
}

func newIncarnation() []byte {
	b := make([]byte, 4)
	rand.Read(b)
	return b
}

// dynFormat follows the view's fingerprint in the layout item: the store's
// item format (hour segments of rolled-up stream tiles). A build that does
// not know it sees another layout and never reads the view's items; this
// one reads a table written without it (tile items only) as it is, and
// tags it. checkLayout, the translation of a view's items to a new layout
// and finishRebuild are in dynamo_layout.go.
const dynFormat = "+segments"

// ---------------------------------------------------------------------------
// Small per-view and per-partition items

func (d *dynStore) progress(topic string) (map[int32]Progress, error) {
	ctx, cancel := opCtx()
	defer cancel()
	out := map[int32]Progress{}
	err := d.t.QueryPrefix(ctx, progressPK(topic), nil, func(it *dynamo.Item) error {
		if len(it.SK) != 4 {
			return nil
		}
		p := int32(binary.BigEndian.Uint32(it.SK))
		pr, err := decodeProgress(it.B("v"))
		if err != nil {
			return fmt.Errorf("progress of %s/%d: %w", topic, p, err)
		}
		out[p] = pr
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read progress of %s: %w", topic, err)
	}
	return out, nil
}

func (d *dynStore) archiveItems(view string, fn func(p int32, it *dynamo.Item) error) error {
	ctx, cancel := opCtx()
	defer cancel()
	return d.t.QueryPrefix(ctx, archivePK(view), nil, func(it *dynamo.Item) error {
		if len(it.SK) != 4 {
			return nil
		}
		return fn(int32(binary.BigEndian.Uint32(it.SK)), it)
	})
}

// Meta returns the healer's state of a view and its version (0: none).
func (d *dynStore) meta(view string) ([]byte, int64, error) {
	inc, err := d.incarnation(view)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := opCtx()
	defer cancel()
	it, err := d.t.Get(ctx, viewPK(view, inc), dskMeta)
	if err != nil || it == nil {
		return nil, 0, err
	}
	ver, _ := it.N("mv")
	val, err := d.assemble(ctx, it, uint64(ver))
	return val, ver, err
}

// ---------------------------------------------------------------------------
// Leases

// Lease is a view's healing lease as stored.
type Lease struct {
	Owner   string
	Expires time.Time
}

// AcquireLease takes or renews the view's healing lease for owner until
// now+d. It fails with ErrLeaseHeld (naming the holder) while another owner
// holds an unexpired lease. The Pebble store, used by one process, always
// grants it.
func (s *Store) AcquireLease(view, owner string, now time.Time, d time.Duration) error {
	if s.dyn == nil {
		return nil
	}
	return s.dyn.acquireLease(view, owner, now, d)
}

// ReleaseLease gives the lease up if owner holds it.
func (s *Store) ReleaseLease(view, owner string) error {
	if s.dyn == nil {
		return nil
	}
	return s.dyn.releaseLease(view, owner)
}

// ErrLeaseHeld is returned while another instance holds a view's lease.
var ErrLeaseHeld = errors.New("state: lease held by another instance")

func (d *dynStore) acquireLease(view, owner string, now time.Time, dur time.Duration) error {
	inc, err := d.incarnation(view)
	if err != nil {
		return err
	}
	ctx, cancel := opCtx()
	defer cancel()
	it := &dynamo.Item{PK: viewPK(view, inc), SK: dskLease}
	it.SetB("owner", []byte(owner))
	it.SetN("exp", now.Add(dur).UnixMilli())
	err = d.t.Put(ctx, it, &dynamo.Cond{IfAbsent: true, Or: []dynamo.Clause{
		{Attr: "owner", Op: "=", B: []byte(owner)},
		{Attr: "exp", Op: "<", N: now.UnixMilli()},
	}})
	if errors.Is(err, dynamo.ErrConditionFailed) {
		holder := "?"
		if cur, gerr := d.t.Get(ctx, viewPK(view, inc), dskLease); gerr == nil && cur != nil {
			exp, _ := cur.N("exp")
			holder = fmt.Sprintf("%s until %s", cur.B("owner"), time.UnixMilli(exp).UTC().Format(time.RFC3339))
		}
		return fmt.Errorf("%w: view %s: %s", ErrLeaseHeld, view, holder)
	}
	return err
}

func (d *dynStore) releaseLease(view, owner string) error {
	inc, err := d.incarnation(view)
	if err != nil {
		return err
	}
	ctx, cancel := opCtx()
	defer cancel()
	err = d.t.Delete(ctx, dynamo.Key{PK: viewPK(view, inc), SK: dskLease},
		&dynamo.Cond{Or: []dynamo.Clause{{Attr: "owner", Op: "=", B: []byte(owner)}}})
	if errors.Is(err, dynamo.ErrConditionFailed) {
		return nil // not ours (any more)
	}
	return err
}
