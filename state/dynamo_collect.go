package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/tilestream/tilestream/state/dynamo"
)

// Collection of a view's old incarnations on DynamoDB (docs/format.md,
// "Layout changes").
//
// A layout change moves a view to a new incarnation (a translation's flip,
// or a rebuild's new, empty one); every write of the layout item lists the
// incarnations it stops naming in its Collect list, with the time
// (writeLayoutItem). Instances of the old layout stop within 10 s (the
// layout watch); once incarnationGrace has passed, the healer's run loop of
// any instance (CollectIncarnations) deletes every item whose partition key
// is the old incarnation's — the four kinds, found by a filtered scan of the
// table as the translation finds them, since stream-only keys are in no key
// list — page by page in BatchWriteItem deletes. One instance collects,
// holding a lease in the incarnation's progress item (pk as the layout
// item's, sk 'C' · u32be(inc)), renewed with every page together with the
// scan's cursor: a crash or a lost lease resumes after the last page
// recorded (deleting an item twice is harmless). Once the scan has ended,
// the progress item is marked done, the entry is removed from the layout
// item (only while no translation or rebuild runs, so that their
// conditional writes of the layout item never fail for it), and the
// progress item is deleted. The scan is paced (DynamoConfig.CollectRate):
// it reads, and may delete, every item of the table, capacity the service
// needs.

// incarnationGrace is how long after the layout item stopped naming an
// incarnation its items are kept: far beyond the 10 s within which the
// instances of the old layout stop (the layout watch), so that none still
// reads or writes it.
const incarnationGrace = 10 * time.Minute

// DefaultCollectRate and MinCollectRate are DynamoConfig.CollectRate's
// default and least value (items scanned per second).
const (
	DefaultCollectRate = 1000
	MinCollectRate     = 100
)

// dskCollect begins the sort key of an incarnation's collection progress in
// the view's layout partition.
const dskCollect byte = 'C'

func collectSK(inc uint32) []byte { return binary.BigEndian.AppendUint32([]byte{dskCollect}, inc) }

// Attributes of the collection's progress item.
const (
	attrColOwner = "owner"
	attrColExp   = "exp"
	attrColPK    = "cpk"
	attrColSK    = "csk"
	attrColItems = "n"
	attrColDone  = "done"
)

// incPrefixes are the partition key prefixes of the view's items of an
// incarnation. str(view) carries its length, so no view's prefix is a
// prefix of another view's keys (txn · inc vs txn2 · inc).
func incPrefixes(view string, inc uint32) [][]byte {
	return [][]byte{
		viewIncPrefix(dpkKey, view, inc),
		viewIncPrefix(dpkView, view, inc),
		viewIncPrefix(dpkGenKeys, view, inc),
		viewIncPrefix(dpkDayKeys, view, inc),
	}
}

// CollectIncarnations deletes the items of the view's old incarnations that
// the layout item stopped naming incarnationGrace or more before now
// (DynamoDB; nothing on Pebble, which changes layouts in place). The
// healer's run loop calls it periodically; it returns at once when there
// is nothing due or another instance is collecting.
func (s *Store) CollectIncarnations(ctx context.Context, view string, now time.Time) error {
	if s.dyn == nil {
		return nil
	}
	return s.dyn.collectIncarnations(ctx, view, now)
}

func (d *dynStore) collectIncarnations(ctx context.Context, view string, now time.Time) error {
	li, err := d.readLayoutItem(ctx, view)
	if err != nil || li == nil || li.meta == nil {
		return err
	}
	var errs []error
	for _, o := range li.meta.Collect {
		if now.UnixMilli()-o.Since < incarnationGrace.Milliseconds() {
			continue
		}
		if err := d.collectIncarnation(ctx, view, o.Inc); err != nil {
			errs = append(errs, fmt.Errorf("collect incarnation %08x of view %s: %w", o.Inc, view, err))
		}
	}
	return errors.Join(errs...)
}

// errCollectionLost: another instance took the collection's lease over.
var errCollectionLost = errors.New("state: the collection of an old incarnation was taken over by another instance")

// collection is one instance's hold on an incarnation's collection.
type collection struct {
	d       *dynStore
	view    string
	inc     uint32
	renewed time.Time
}

func (c *collection) key() dynamo.Key { return dynamo.Key{PK: layoutPK(c.view), SK: collectSK(c.inc)} }

func (c *collection) owner() []byte { return []byte(c.d.owner) }

// update writes attributes of the progress item with the lease renewed,
// conditioned on this instance holding it.
func (c *collection) update(ctx context.Context, set *dynamo.Item) error {
	k := c.key()
	set.PK, set.SK = k.PK, k.SK
	now := time.Now()
	set.SetN(attrColExp, now.Add(c.d.translateLease).UnixMilli())
	err := c.d.t.Update(ctx, set, nil, &dynamo.Cond{Or: []dynamo.Clause{{Attr: attrColOwner, Op: "=", B: c.owner()}}})
	if errors.Is(err, dynamo.ErrConditionFailed) {
		return errCollectionLost
	}
	if err == nil {
		c.renewed = now
	}
	return err
}

// release lets the lease lapse now (best effort: it expires by itself).
func (c *collection) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	k := c.key()
	set := &dynamo.Item{PK: k.PK, SK: k.SK}
	set.SetN(attrColExp, 0)
	err := c.d.t.Update(ctx, set, nil, &dynamo.Cond{Or: []dynamo.Clause{{Attr: attrColOwner, Op: "=", B: c.owner()}}})
	if err != nil && !errors.Is(err, dynamo.ErrConditionFailed) {
		c.d.log.Warn("release the lease of an old incarnation's collection (it expires by itself)", "view", c.view, "err", err)
	}
}

// collectIncarnation collects one incarnation of the view under its lease.
func (d *dynStore) collectIncarnation(ctx context.Context, view string, inc uint32) (err error) {
	c := &collection{d: d, view: view, inc: inc}
	k := c.key()
	// Take the lease: the progress item is created, or is ours, or its
	// lease has expired.
	now := time.Now()
	set := &dynamo.Item{PK: k.PK, SK: k.SK}
	set.SetB(attrColOwner, c.owner())
	set.SetN(attrColExp, now.Add(d.translateLease).UnixMilli())
	err = d.t.Update(ctx, set, nil, &dynamo.Cond{IfAbsent: true, Or: []dynamo.Clause{
		{Attr: attrColOwner, Op: "=", B: c.owner()},
		{Attr: attrColExp, Op: "<", N: now.UnixMilli()},
	}})
	if errors.Is(err, dynamo.ErrConditionFailed) {
		return nil // another instance collects it
	}
	if err != nil {
		return err
	}
	c.renewed = now
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	prog, err := d.t.Get(ctx, k.PK, k.SK)
	if err != nil {
		return err
	}
	if prog == nil || !bytes.Equal(prog.B(attrColOwner), c.owner()) {
		return errCollectionLost
	}
	// The entry may have been removed meanwhile (collected by another
	// instance, whose progress item this lease just created again).
	li, err := d.readLayoutItem(ctx, view)
	if err != nil {
		return err
	}
	if !listed(li, inc) {
		return d.dropProgress(ctx, c)
	}
	deleted, _ := prog.N(attrColItems)
	if done, _ := prog.N(attrColDone); done == 0 {
		if deleted, err = d.scanDelete(ctx, c, prog, deleted); err != nil {
			return err
		}
	}
	// Every item is deleted: the entry goes from the layout item, unless a
	// translation or a rebuild is writing it (the next round removes it).
	for attempt := 0; ; attempt++ {
		if li == nil || li.meta == nil || !listed(li, inc) {
			break
		}
		if strings.HasSuffix(li.v, translatingMark) || strings.HasSuffix(li.v, rebuildMark) || attempt == 5 {
			d.log.Info("an old incarnation's items are deleted; its entry in the layout item is removed once the layout change running ends",
				"view", view, "incarnation", fmt.Sprintf("%08x", inc))
			c.release()
			return nil
		}
		m := *li.meta
		m.Collect = slices.DeleteFunc(slices.Clone(m.Collect), func(o dynOldInc) bool { return o.Inc == inc })
		_, err := d.putLayoutItem(ctx, view, li.v, li.inc, &m, li)
		if err == nil {
			break
		}
		if !errors.Is(err, dynamo.ErrConditionFailed) {
			return err
		}
		if li, err = d.readLayoutItem(ctx, view); err != nil {
			return err
		}
	}
	return d.dropProgress(ctx, c)
}

// listed reports whether the layout item lists inc to collect and names it
// no more.
func listed(li *layoutItem, inc uint32) bool {
	return li != nil && li.meta != nil && !slices.Contains(li.liveIncs(), inc) &&
		slices.ContainsFunc(li.meta.Collect, func(o dynOldInc) bool { return o.Inc == inc })
}

// dropProgress deletes the progress item if this instance holds its lease.
func (d *dynStore) dropProgress(ctx context.Context, c *collection) error {
	err := d.t.Delete(ctx, c.key(), &dynamo.Cond{Or: []dynamo.Clause{{Attr: attrColOwner, Op: "=", B: c.owner()}}})
	if errors.Is(err, dynamo.ErrConditionFailed) {
		return nil
	}
	return err
}

// scanDelete deletes every item of the incarnation, page by page of a scan
// of the table after the recorded cursor, recording the cursor after each
// page and marking the progress item done at the end. It returns the items
// deleted, those of earlier rounds included.
func (d *dynStore) scanDelete(ctx context.Context, c *collection, prog *dynamo.Item, deleted int64) (int64, error) {
	view, inc := c.view, c.inc
	prefixes := incPrefixes(view, inc)
	var start *dynamo.Key
	if pk := prog.B(attrColPK); pk != nil {
		start = &dynamo.Key{PK: pk, SK: prog.B(attrColSK)}
	}
	d.log.Info("deleting the items of an old incarnation of the view (a scan of the table)", "view", view,
		"incarnation", fmt.Sprintf("%08x", inc), "resumed", start != nil, "items_deleted_before", deleted)
	began, round, page := time.Now(), int64(0), 0
	// Each page evaluates up to translatePage items: wait for that many
	// before the next (the first comes at once).
	pace := rate.NewLimiter(rate.Limit(d.collectRate), int(d.translatePage))
	err := d.t.ScanPrefixes(ctx, prefixes, start, d.translatePage, func(items []*dynamo.Item, next *dynamo.Key) error {
		if err := pace.WaitN(ctx, int(d.translatePage)); err != nil {
			return err
		}
		// The incarnation is still one to collect: never one in use.
		li, err := d.readLayoutItem(ctx, view)
		if err != nil {
			return err
		}
		if !listed(li, inc) {
			return fmt.Errorf("the layout item no longer lists the incarnation to collect")
		}
		if time.Since(c.renewed) > d.translateLease/3 {
			if err := c.update(ctx, &dynamo.Item{}); err != nil {
				return err
			}
		}
		dels := make([]dynamo.Key, 0, len(items))
		for _, it := range items {
			if !slices.ContainsFunc(prefixes, func(p []byte) bool { return bytes.HasPrefix(it.PK, p) }) {
				return fmt.Errorf("the scan returned item %s, not of the incarnation", it.Key())
			}
			dels = append(dels, it.Key())
		}
		if len(dels) > 0 {
			if err := d.t.BatchWrite(ctx, nil, dels); err != nil {
				return err
			}
			deleted += int64(len(dels))
			round += int64(len(dels))
			d.m.incDeleted.Add(float64(len(dels)))
		}
		if next == nil {
			return nil // done below
		}
		set := &dynamo.Item{}
		set.SetB(attrColPK, next.PK)
		set.SetB(attrColSK, next.SK)
		set.SetN(attrColItems, deleted)
		if err := c.update(ctx, set); err != nil {
			return err
		}
		page++
		if page%50 == 0 {
			d.log.Info("deleting the items of an old incarnation of the view", "view", view, "items", deleted)
		}
		if d.testPageHook != nil {
			return d.testPageHook(page)
		}
		return nil
	})
	if err != nil {
		d.log.Warn("the deletion of an old incarnation's items stopped (it resumes after its last page)", "view", view,
			"incarnation", fmt.Sprintf("%08x", inc), "items", deleted, "err", err)
		return deleted, err
	}
	set := &dynamo.Item{}
	set.SetN(attrColDone, 1)
	set.SetN(attrColItems, deleted)
	if err := c.update(ctx, set); err != nil {
		return deleted, err
	}
	d.log.Info("deleted the items of an old incarnation of the view", "view", view, "incarnation", fmt.Sprintf("%08x", inc),
		"items", deleted, "items_this_round", round, "seconds", time.Since(began).Seconds())
	return deleted, nil
}
