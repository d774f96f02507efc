package state

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
	"github.com/valyala/fastjson"

	"github.com/tilestream/tilestream/tiling"
)

// offlineMaxKeyBytes bounds the keys of user files, as the JSON Lines
// decoder does. Archive keys were checked by ingest and are taken as they are.
const offlineMaxKeyBytes = 2048

// ReadDay reads every file of one date of view v and calls fn once per
// distinct event.
//
// Events are deduplicated within the date by identity: the value of the
// eventIDField when it is set and the row has one (it wins over the position,
// so a retried producer's duplicate counts once); otherwise the Kafka
// position (_partition, _offset) for archive rows; rows of user files without
// an event id are all distinct. The copy kept of a duplicate is the first in
// (file name, row) order.
//
// Malformed rows (missing or mistyped key or timestamp, an event time off the
// date, a non-number in a numeric column, …) are reported through bad with
// their file name, 0-based row (line for JSON Lines) and one of the
// tiling.Reasons or ReasonOutsideDate / ReasonBadPosition; files whose bytes
// cannot be decoded (not Parquet, a damaged footer) are reported with row −1
// and a message, and a corrupt row group of an otherwise readable file
// likewise (its rows before the damage may have been read). Neither fails
// the read; bad may be nil. What is returned is fn's error, an I/O error
// listing the date directory, or a failure to get a listed file's bytes,
// which wraps an error that unavailable finds: an I/O error, a file listed
// and then missing, S3 unreachable, a server error, throttling, a refusal
// (403 and every other 4xx), a checksum that does not match, an object
// replaced while it was read. Retry later: the events read before it were
// passed to fn. A date without a directory is empty.
//
// The events are exactly what ingest's decoder gives for the same events,
// bit for bit: archive rows come back as they were archived. Rows of user
// files get Pos{Partition: a negative number derived from the file name,
// Offset: the row or line index}, so that last() orders them
// deterministically.
//
// fn's *tiling.Event, its Inputs and their Raw bytes are reused after fn
// returns; its ID is left empty (the identity is consumed here). Its Key is a string that stays valid, but it may share memory
// with the other keys of a row group (dictionary or page): strings.Clone the
// keys kept for long.
func (l *OfflineLog) ReadDay(v *tiling.View, eventIDField string, date int64, fn func(e *tiling.Event) error, bad func(file string, row int64, reason string)) (ReadStats, error) {
	return l.readDay(v, eventIDField, date, nil, fn, bad)
}

// ReadFiles is ReadDay restricted to the files of d (a listing from Days,
// possibly filtered): a heal reads exactly the files it sampled, not those
// written while it runs.
func (l *OfflineLog) ReadFiles(v *tiling.View, eventIDField string, d DayFiles, fn func(e *tiling.Event) error, bad func(file string, row int64, reason string)) (ReadStats, error) {
	if d.Files == nil {
		d.Files = []FileInfo{}
	}
	return l.readDay(v, eventIDField, d.Date, d.Files, fn, bad)
}

// ArchiveFileRange parses an archive file name: its partition and offset
// range. ok is false for other files.
func ArchiveFileRange(name string) (partition int32, first, last int64, ok bool) {
	if classify(name) != fileParquet {
		return 0, 0, 0, false
	}
	return parseArchiveName(name)
}

func (l *OfflineLog) readDay(v *tiling.View, eventIDField string, date int64, only []FileInfo, fn func(e *tiling.Event) error, bad func(file string, row int64, reason string)) (ReadStats, error) {
	if err := checkViewName(v.Name); err != nil {
		return ReadStats{}, err
	}
	if dayOf(date) != date {
		return ReadStats{}, fmt.Errorf("offline log: read %s: date %d is not a UTC midnight", v.Name, date)
	}
	lay, err := newArchiveLayout(v, eventIDField)
	if err != nil {
		return ReadStats{}, err
	}
	dir := v.Name + "/" + dateDir(date)
	files := only
	if files == nil {
		files, err = l.listDay(context.Background(), dir)
		if errors.Is(err, fs.ErrNotExist) {
			return ReadStats{}, nil
		}
		if err != nil {
			return ReadStats{}, fmt.Errorf("offline log: read %s %s: %w", v.Name, dateDir(date), err)
		}
	} else {
		files = append([]FileInfo(nil), files...)
		sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	}
	r := newDayReader(v, lay, eventIDField, date, fn, bad)
	defer r.release()
	r.dd.plan(files)
	next, stop := openAhead(l.store, dir, files, l.ahead)
	defer stop()
	for _, f := range files {
		fc := newFileCtx(f.Name)
		o := next()
		if o.err != nil {
			return r.stats, fmt.Errorf("offline log: read %s/%s: %w", dir, f.Name, openFailure(o.err))
		}
		r.stats.Files++
		r.stats.Bytes += o.f.Size()
		src := &trackedFile{offlineFile: o.f}
		r.cur = src
		var err error
		switch classify(f.Name) {
		case fileParquet:
			err = r.readParquetFrom(fc, src, src.Size())
		case fileJSONL:
			err = r.readLines(fc, io.NewSectionReader(src, 0, src.Size()))
		}
		src.Close()
		if err != nil {
			return r.stats, err
		}
		if src.failed != nil {
			return r.stats, fmt.Errorf("offline log: read %s/%s: %w", dir, f.Name, src.failed)
		}
	}
	return r.stats, nil
}

// dayReader reads the files of one date.
type dayReader struct {
	v       *tiling.View
	lay     archiveLayout
	idField string
	date    int64
	fn      func(*tiling.Event) error
	bad     func(string, int64, string)
	stats   ReadStats
	dd      dedup
	cur     *trackedFile // the file being read
	// requireCRC refuses Parquet pages without a checksum in user files
	// too. Fuzzing sets it: it keeps the search on this package's code, away
	// from parquet-go's decoders, which trust lengths inside damaged pages.
	requireCRC bool

	ev      tiling.Event
	scratch [][]byte // per column: Raw built from typed values
	keyBuf  []byte   // integer keys as text; strings point into it, never reused
	idBuf   []byte
	jp      fastjson.Parser
	valRows [][]int32 // emitRun's runs of the value columns' indexes

	// Parquet cursors, reused across row groups and files.
	key, ts, part, off, id pqCursor
	vals                   []pqCursor
	valIdx                 []int

	// JSON Lines.
	dec     *tiling.Decoder
	decoded tiling.Decoded
	line    []byte
}

func newDayReader(v *tiling.View, lay archiveLayout, idField string, date int64, fn func(*tiling.Event) error, bad func(string, int64, string)) *dayReader {
	if bad == nil {
		bad = func(string, int64, string) {}
	}
	r := &dayReader{v: v, lay: lay, idField: idField, date: date, fn: fn, bad: bad}
	r.ev.Inputs = make([]tiling.Input, len(v.Columns()))
	r.scratch = make([][]byte, len(v.Columns()))
	return r
}

// release gives the reader's buffers back for the next day's reader.
func (r *dayReader) release() {
	for _, c := range []*pqCursor{&r.key, &r.ts, &r.part, &r.off, &r.id} {
		c.release()
	}
	for i := range r.vals {
		r.vals[i].release()
	}
}

// fnError carries fn's error out of a file read.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// file is what the emit loop knows of the file being read.
type fileCtx struct {
	name        string
	archive     bool
	partition   int32
	first, last int64
	userPart    int32
	comp        *posComp
	badFile     bool
}

func (r *dayReader) badFile(fc *fileCtx, msg string) {
	if r.cur != nil && r.cur.failed != nil {
		return // not the file's fault: the read fails with the storage's error
	}
	if !fc.badFile {
		fc.badFile = true
		r.stats.BadFiles++
	}
	r.bad(r.path(fc), -1, msg)
}

// badRow reports a malformed row: row is the Parquet row's index (from 0)
// or the JSON Lines line's number (from 1).
func (r *dayReader) badRow(fc *fileCtx, row int64, reason string) {
	r.stats.BadRows++
	r.bad(r.path(fc), row, reason)
}

// path is fc's path within the offline log, as bad reports it:
// <view>/date=YYYY-MM-DD/<file>.
func (r *dayReader) path(fc *fileCtx) string {
	return r.v.Name + "/" + dateDir(r.date) + "/" + fc.name
}

// openFailure is the error of a listed file that could not be opened, as
// an unavailable error: the day read fails and is retried. A file missing
// since the listing is one too: it was removed since (the next listing no
// longer has it, so a retry costs one read), or the storage does not show
// it yet (an eventually consistent store, a misrouted endpoint), and
// skipping it would leave it out for as long as the listing stays the same.
func openFailure(err error) error {
	if unavailable(err) != nil {
		return err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return &unavailableError{fmt.Errorf("listed, then not found: %w", err)}
	}
	return &unavailableError{err}
}

func newFileCtx(name string) *fileCtx {
	fc := &fileCtx{name: name, userPart: userPartition(name)}
	fc.partition, fc.first, fc.last, fc.archive = parseArchiveName(name)
	return fc
}

// readParquetFrom reads the Parquet file fc of size bytes from src; only
// fn's error is returned.
func (r *dayReader) readParquetFrom(fc *fileCtx, src io.ReaderAt, size int64) error {
	pf, err := openParquet(src, size)
	if err != nil {
		r.badFile(fc, "not a readable Parquet file: "+err.Error())
		return nil
	}
	var plan parquetPlan
	var msg string
	if err := protect(func() error {
		plan, msg = r.planParquet(pf, fc)
		return nil
	}); err != nil {
		msg = err.Error()
	}
	if msg != "" {
		r.badFile(fc, msg)
		return nil
	}
	if fc.archive {
		fc.comp = r.dd.comp(fc.partition, fc.first, fc.last)
	}
	if plan.id != nil {
		// The row count comes from the footer: trust it only as far as the
		// file's size could hold.
		r.dd.ids.reserve(int(max(0, min(pf.NumRows(), 8*size, 1<<26))))
	}
	var base int64
	meta := pf.Metadata().RowGroups
	for g, rg := range pf.RowGroups() {
		n := rg.NumRows()
		err := r.readRowGroup(fc, &plan, src, rg, &meta[g], base)
		var fe fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if err != nil {
			r.badFile(fc, fmt.Sprintf("row group %d (rows from %d): %v", g, base, err))
		}
		base += n
	}
	return nil
}

// parquetPlan is the columns a file offers for the view.
type parquetPlan struct {
	key, ts, part, off, id *pqColumn
	vals                   []*pqColumn // nil: absent, every value missing
}

// columns lists the columns the plan reads.
func (p *parquetPlan) columns() []*pqColumn {
	var cs []*pqColumn
	for _, c := range append([]*pqColumn{p.key, p.ts, p.part, p.off, p.id}, p.vals...) {
		if c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

// planParquet maps the view onto the file's columns; msg says why the file
// cannot be read.
func (r *dayReader) planParquet(pf *parquet.File, fc *fileCtx) (p parquetPlan, msg string) {
	jsonCols := map[string]bool{}
	if s, ok := pf.Lookup(metaJSONColumns); ok && s != "" {
		for _, c := range strings.Split(s, ",") {
			jsonCols[c] = true
		}
	}
	look := func(name string) *pqColumn {
		if msg != "" {
			return nil
		}
		c, err := lookupColumn(pf, name, jsonCols[name])
		if err != nil {
			msg = err.Error()
		}
		return c
	}
	names := r.v.Columns()
	idName := r.idField
	if fc.archive {
		names = r.lay.cols
		idName = r.lay.id
	}
	p.key = look(r.lay.key)
	p.ts = look(r.lay.ts)
	for _, n := range names {
		p.vals = append(p.vals, look(n))
	}
	if idName != "" {
		p.id = look(idName)
	}
	if fc.archive {
		p.part = look(colPartition)
		p.off = look(colOffset)
	}
	switch {
	case msg != "":
		return p, msg
	case p.key == nil:
		return p, fmt.Sprintf("no key column %q", r.lay.key)
	case p.ts == nil:
		return p, fmt.Sprintf("no timestamp column %q", r.lay.ts)
	case fc.archive && (p.part == nil || p.off == nil):
		return p, "an archive file without _partition and _offset columns"
	case fc.archive && (p.part.kind != parquet.Int32 || p.off.kind != parquet.Int64):
		return p, "archive _partition or _offset column has the wrong type"
	}
	switch p.key.conv {
	case convString, convJSON, convInt, convUint:
	default:
		return p, fmt.Sprintf("key column %q has type %s (string or integer expected)", p.key.name, p.key.col.Type())
	}
	switch p.ts.conv {
	case convBool:
		return p, fmt.Sprintf("timestamp column %q has type %s", p.ts.name, p.ts.col.Type())
	}
	if p.id != nil {
		switch p.id.conv {
		case convString, convJSON, convInt, convUint:
		default:
			return p, fmt.Sprintf("event id column %q has type %s (string or integer expected)", p.id.name, p.id.col.Type())
		}
	}
	return p, ""
}

// readRowGroup emits the rows of one row group. Errors other than fnError
// are the row group's decoding errors.
func (r *dayReader) readRowGroup(fc *fileCtx, p *parquetPlan, src io.ReaderAt, rg parquet.RowGroup, meta *format.RowGroup, base int64) error {
	for _, col := range p.columns() {
		if col.index >= len(meta.Columns) {
			return fmt.Errorf("%w: column %q has no chunk", errCorrupt, col.name)
		}
		if err := checkChunkPages(src, &meta.Columns[col.index].MetaData, meta.NumRows, fc.archive || r.requireCRC); err != nil {
			return fmt.Errorf("column %q: %w", col.name, err)
		}
	}
	var cursors []*pqCursor
	defer func() {
		for _, c := range cursors {
			c.close()
		}
	}()
	if err := protect(func() error { return r.startRowGroup(fc, p, rg, &cursors) }); err != nil {
		return err
	}
	return r.emitRowGroup(fc, p, rg.NumRows(), base, cursors)
}

// startRowGroup starts a cursor on every column chunk the plan reads.
func (r *dayReader) startRowGroup(fc *fileCtx, p *parquetPlan, rg parquet.RowGroup, cursors *[]*pqCursor) error {
	chunks := rg.ColumnChunks()
	for _, col := range p.columns() {
		if col.index >= len(chunks) {
			return fmt.Errorf("%w: column %q has no chunk", errCorrupt, col.name)
		}
	}
	start := func(c *pqCursor, col *pqColumn, fresh bool) {
		c.reset(col, chunks[col.index], fresh)
		*cursors = append(*cursors, c)
	}
	start(&r.key, p.key, true)
	start(&r.ts, p.ts, false)
	if fc.archive {
		start(&r.part, p.part, false)
		start(&r.off, p.off, false)
	}
	if p.id != nil {
		start(&r.id, p.id, false)
	}
	if len(r.vals) < len(p.vals) {
		r.vals = make([]pqCursor, len(p.vals))
		r.valIdx = make([]int, len(p.vals))
	}
	for j, col := range p.vals {
		if col != nil {
			start(&r.vals[j], col, false)
		}
	}
	return nil
}

// emitRowGroup reads the n rows of a started row group and emits them, a
// run of rows at a time: as many as every cursor's page still holds.
func (r *dayReader) emitRowGroup(fc *fileCtx, p *parquetPlan, n, base int64, cursors []*pqCursor) error {
	for i := int64(0); i < n; {
		run := n - i
		for _, c := range cursors {
			if c.pos >= len(c.rows) {
				if c.err == nil {
					c.err = c.nextPage()
				}
				if c.err != nil {
					return c.err
				}
			}
			run = min(run, int64(len(c.rows)-c.pos))
		}
		if err := r.emitRun(fc, p, int(run), base+i); err != nil {
			return err
		}
		for _, c := range cursors {
			c.pos += int(run)
		}
		i += run
	}
	return nil
}

// emitRun emits the run rows from base on, which every cursor's page holds
// from its position on.
func (r *dayReader) emitRun(fc *fileCtx, p *parquetPlan, run int, base int64) error {
	ev := &r.ev
	keys, tss := r.key.run(run), r.ts.run(run)
	var parts, offs, ids []int32
	if fc.archive {
		parts, offs = r.part.run(run), r.off.run(run)
	}
	if p.id != nil {
		ids = r.id.run(run)
	}
	r.valRows = r.valRows[:0]
	for j, col := range p.vals {
		var rows []int32
		if col != nil {
			rows = r.vals[j].run(run)
		}
		r.valRows = append(r.valRows, rows)
	}
	for k := range run {
		row := base + int64(k)
		kk, tk := int(keys[k]), int(tss[k])
		for j, rows := range r.valRows {
			r.valIdx[j] = -1
			if rows != nil {
				r.valIdx[j] = int(rows[k])
			}
		}
		pk, ok := 0, 0
		if fc.archive {
			pk, ok = int(parts[k]), int(offs[k])
		}
		ik := -1
		if ids != nil {
			ik = int(ids[k])
		}
		r.stats.Rows++

		// Key, then time, then the columns: the decoder's order of checks.
		if reason := r.parquetKey(fc, kk); reason != "" {
			r.badRow(fc, row, reason)
			continue
		}
		ts, reason := r.parquetTime(tk)
		if reason == "" && dayOf(ts) != r.date {
			reason = ReasonOutsideDate
		}
		if reason != "" {
			r.badRow(fc, row, reason)
			continue
		}
		ev.TS = ts
		// A dictionary index names the key (a plain page's index would name
		// one row: no use).
		ev.KeyRef = tiling.KeyRef{}
		if r.key.storIsDict {
			ev.KeyRef = tiling.KeyRef{Store: r.key.gen, Index: uint32(kk)}
		}
		for j := range p.vals {
			if reason = r.parquetValue(fc, j, p.vals[j], r.valIdx[j]); reason != "" {
				break
			}
		}
		if reason != "" {
			r.badRow(fc, row, reason)
			continue
		}
		if fc.archive {
			if pk < 0 || ok < 0 {
				r.badRow(fc, row, ReasonBadPosition)
				continue
			}
			ev.Pos = tiling.Pos{Partition: r.part.i32[pk], Offset: r.off.i64[ok]}
			if ev.Pos.Partition != fc.partition || ev.Pos.Offset < fc.first || ev.Pos.Offset > fc.last {
				r.badRow(fc, row, ReasonBadPosition)
				continue
			}
		} else {
			ev.Pos = tiling.Pos{Partition: fc.userPart, Offset: row}
		}
		var id []byte
		if ik >= 0 {
			id = r.parquetID(ik)
		}
		if err := r.emit(fc, ev, id); err != nil {
			return err
		}
	}
	return nil
}

// emit deduplicates ev and passes it to fn; fn's error comes back as fnError.
func (r *dayReader) emit(fc *fileCtx, ev *tiling.Event, id []byte) error {
	switch {
	case len(id) > 0:
		if r.dd.seenID(id) {
			r.stats.Duplicates++
			return nil
		}
	case fc.archive:
		if fc.comp.seen(ev.Pos.Offset) {
			r.stats.Duplicates++
			return nil
		}
	}
	r.stats.Events++
	if err := r.fn(ev); err != nil {
		return fnError{err}
	}
	return nil
}

// parquetKey sets the event key from value k of the key column.
func (r *dayReader) parquetKey(fc *fileCtx, k int) string {
	if k < 0 {
		return tiling.ReasonMissingKey
	}
	c := &r.key
	switch c.col.conv {
	case convInt, convUint:
		if len(r.keyBuf)+24 > cap(r.keyBuf) {
			r.keyBuf = make([]byte, 0, 64<<10)
		}
		s := len(r.keyBuf)
		if c.col.conv == convUint && c.col.kind == parquet.Int64 {
			r.keyBuf = strconv.AppendUint(r.keyBuf, uint64(c.i64[k]), 10)
		} else {
			r.keyBuf = strconv.AppendInt(r.keyBuf, c.int(k), 10)
		}
		r.ev.Key = unsafe.String(&r.keyBuf[s], len(r.keyBuf)-s)
		return ""
	}
	b := c.bytes(k)
	if len(b) == 0 {
		return tiling.ReasonBadKey
	}
	if !fc.archive {
		if !utf8.Valid(b) {
			return tiling.ReasonBadKey
		}
		if len(b) > offlineMaxKeyBytes {
			return tiling.ReasonKeyTooLong
		}
	}
	r.ev.Key = unsafe.String(&b[0], len(b))
	return ""
}

// parquetTime reads value k of the timestamp column as epoch ms, with the
// decoder's rules for numbers and strings.
func (r *dayReader) parquetTime(k int) (int64, string) {
	if k < 0 {
		return 0, tiling.ReasonMissingTime
	}
	c := &r.ts
	switch c.col.conv {
	case convInt:
		t := c.int(k)
		if c.col.tsUnit > 1 {
			t = floorDiv(t, c.col.tsUnit)
		}
		return t, ""
	case convUint:
		if c.col.kind == parquet.Int64 && c.i64[k] < 0 {
			return 0, tiling.ReasonBadTime
		}
		return c.int(k), ""
	case convDate:
		d := c.int(k)
		return d * tiling.Day, ""
	case convDecimal:
		p := pow10(c.col.scale)
		if p == 0 {
			return 0, tiling.ReasonBadTime
		}
		return floorDiv(c.int(k), p), ""
	case convFloat:
		return floatTime(float64(c.f32[k]))
	case convDouble:
		return floatTime(c.f64[k])
	case convInt96:
		ns, ok := int96Nanos(c.i96[k])
		if !ok {
			return 0, tiling.ReasonBadTime
		}
		return floorDiv(ns, 1_000_000), ""
	case convString:
		return stringTime(c.bytes(k))
	case convJSON:
		v, err := r.jp.ParseBytes(c.bytes(k))
		if err != nil {
			return 0, tiling.ReasonBadTime
		}
		switch v.Type() {
		case fastjson.TypeNumber:
			f, err := strconv.ParseFloat(v.String(), 64)
			if err != nil {
				return 0, tiling.ReasonBadTime
			}
			return floatTime(f)
		case fastjson.TypeString:
			b, _ := v.StringBytes()
			return stringTime(b)
		case fastjson.TypeNull:
			return 0, tiling.ReasonMissingTime
		}
	}
	return 0, tiling.ReasonBadTime
}

// floatTime applies the decoder's rule to a numeric time: ms, floored,
// within ±2^53.
func floatTime(f float64) (int64, string) {
	if math.IsNaN(f) || math.Abs(f) > 1<<53 {
		return 0, tiling.ReasonBadTime
	}
	return int64(math.Floor(f)), ""
}

// stringTime applies the decoder's rule to a string time: RFC 3339.
func stringTime(b []byte) (int64, string) {
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return 0, tiling.ReasonBadTime
	}
	return t.Unix()*1000 + int64(t.Nanosecond()/1e6), ""
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// pow10 returns 10^s, or 0 when it overflows int64.
func pow10(s int32) int64 {
	p := int64(1)
	for range s {
		if p > math.MaxInt64/10 {
			return 0
		}
		p *= 10
	}
	return p
}

// parquetValue sets input j from value k of its column (-1: null).
func (r *dayReader) parquetValue(fc *fileCtx, j int, col *pqColumn, k int) string {
	in := &r.ev.Inputs[j]
	// Field by field: Raw is usually nil already, and writing a pointer
	// costs a write barrier while the collector runs.
	in.Kind, in.Num = tiling.Missing, 0
	if in.Raw != nil {
		in.Raw = nil
	}
	if k < 0 {
		return ""
	}
	reason, sc := r.valueInto(in, fc, j, col, k, r.scratch[j][:0])
	r.scratch[j] = sc
	return reason
}

// valueInto does parquetValue's work, building Raw text in sc.
func (r *dayReader) valueInto(in *tiling.Input, fc *fileCtx, j int, col *pqColumn, k int, sc []byte) (string, []byte) {
	c := &r.vals[j]
	raw := r.v.ColumnRaw(j)
	switch col.conv {
	case convDouble, convFloat:
		var f float64
		if col.conv == convDouble {
			f = c.f64[k]
		} else {
			f = float64(c.f32[k])
		}
		if raw {
			sc = strconv.AppendFloat(sc, f, 'g', -1, 64)
		}
		return setNumber(in, f, sc, raw), sc
	case convInt, convUint, convDate:
		var f float64
		if col.conv == convUint && col.kind == parquet.Int64 {
			u := uint64(c.i64[k])
			f = float64(u)
			sc = strconv.AppendUint(sc, u, 10)
		} else {
			i := c.int(k)
			f = float64(i)
			sc = strconv.AppendInt(sc, i, 10)
		}
		return setNumber(in, f, sc, raw), sc
	case convDecimal:
		sc = appendDecimal(sc, c.int(k), col.scale)
		f, err := strconv.ParseFloat(unsafe.String(&sc[0], len(sc)), 64)
		if err != nil {
			return tiling.ReasonNonFiniteNumber, sc
		}
		return setNumber(in, f, sc, raw), sc
	case convBool:
		if r.v.ColumnNumeric(j) {
			return tiling.ReasonBadFieldType, sc
		}
		in.Kind = tiling.Other
		if raw {
			sc = strconv.AppendBool(sc, c.bool(k))
			in.Raw = sc
		}
		return "", sc
	case convString:
		if r.v.ColumnNumeric(j) {
			return tiling.ReasonBadFieldType, sc
		}
		in.Kind = tiling.Other
		if raw {
			sc = appendJSONString(sc, c.bytes(k))
			in.Raw = sc
		}
		return "", sc
	case convJSON:
		b := c.bytes(k)
		if fc.archive {
			return r.archiveJSON(in, j, b, raw), sc
		}
		v, err := r.jp.ParseBytes(b)
		if err != nil {
			return tiling.ReasonNotJSON, sc
		}
		if v.Type() == fastjson.TypeNull {
			return "", sc
		}
		sc = v.MarshalTo(sc)
		if v.Type() == fastjson.TypeNumber {
			f, err := strconv.ParseFloat(unsafe.String(&sc[0], len(sc)), 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return tiling.ReasonNotJSON, sc
			}
			return setNumber(in, f, sc, raw), sc
		}
		if r.v.ColumnNumeric(j) {
			return tiling.ReasonBadFieldType, sc
		}
		in.Kind = tiling.Other
		if raw {
			in.Raw = sc
		}
		return "", sc
	}
	return tiling.ReasonBadFieldType, sc
}

// archiveJSON sets in from the JSON text of an archive column, which ingest
// wrote from the decoder's own Raw: a number or another JSON value.
func (r *dayReader) archiveJSON(in *tiling.Input, j int, b []byte, raw bool) string {
	if len(b) == 0 {
		return tiling.ReasonNotJSON
	}
	if c := b[0]; c == '-' || (c >= '0' && c <= '9') {
		f, err := strconv.ParseFloat(unsafe.String(&b[0], len(b)), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return tiling.ReasonNotJSON
		}
		return setNumber(in, f, b, raw)
	}
	if string(b) == "null" {
		return ""
	}
	if r.v.ColumnNumeric(j) {
		return tiling.ReasonBadFieldType
	}
	in.Kind = tiling.Other
	if raw {
		in.Raw = b
	}
	return ""
}

// setNumber sets in to the number f (text its JSON text), as the decoder
// does: finite, −0 as +0, Raw only for raw columns.
func setNumber(in *tiling.Input, f float64, text []byte, raw bool) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return tiling.ReasonNonFiniteNumber
	}
	if f == 0 {
		f = 0
	}
	in.Kind, in.Num = tiling.Number, f
	if raw {
		in.Raw = text
	}
	return ""
}

// parquetID returns the event id of value k of the id column as text.
func (r *dayReader) parquetID(k int) []byte {
	c := &r.id
	switch c.col.conv {
	case convInt:
		r.idBuf = strconv.AppendInt(r.idBuf[:0], c.int(k), 10)
		return r.idBuf
	case convUint:
		if c.col.kind == parquet.Int64 {
			r.idBuf = strconv.AppendUint(r.idBuf[:0], uint64(c.i64[k]), 10)
		} else {
			r.idBuf = strconv.AppendInt(r.idBuf[:0], c.int(k), 10)
		}
		return r.idBuf
	}
	return c.bytes(k)
}

// appendDecimal appends the unscaled integer u with scale digits after the
// point.
func appendDecimal(dst []byte, u int64, scale int32) []byte {
	start := len(dst)
	dst = strconv.AppendInt(dst, u, 10)
	if scale == 0 {
		return dst
	}
	digits := dst[start:]
	neg := digits[0] == '-'
	if neg {
		digits = digits[1:]
	}
	var b []byte
	if neg {
		b = append(b, '-')
	}
	s := int(scale)
	if len(digits) <= s {
		b = append(b, '0', '.')
		for range s - len(digits) {
			b = append(b, '0')
		}
		b = append(b, digits...)
	} else {
		b = append(b, digits[:len(digits)-s]...)
		b = append(b, '.')
		b = append(b, digits[len(digits)-s:]...)
	}
	return append(dst[:start], b...)
}

// appendJSONString appends s as a quoted string exactly as the decoder's Raw
// has it for a JSON string holding s: fastjson's MarshalTo of an unescaped
// string, which quotes s as it is unless it holds '"', '\\' or a control
// character, and then uses strconv.AppendQuote.
func appendJSONString(dst, s []byte) []byte { return tiling.AppendJSONString(dst, s) }

func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Deduplication.

// dedup remembers the identities seen in one date.
type dedup struct {
	ids   idSet
	comps map[int32][]*posComp
	cur   *posComp
}

// posComp covers the offsets of one partition's archive files whose ranges
// overlap (a connected component): positions are deduplicated within it, and
// the files of other components cannot share a position with it. The files
// of a component are adjacent in name order, so one component is live at a
// time.
type posComp struct {
	lo, hi int64
	bits   []uint64
	set    map[int64]struct{}
}

// plan builds the components of the archive files among files.
func (d *dedup) plan(files []FileInfo) {
	type rng struct{ lo, hi int64 }
	per := map[int32][]rng{}
	for _, f := range files {
		if p, first, last, ok := parseArchiveName(f.Name); ok {
			per[p] = append(per[p], rng{first, last})
		}
	}
	d.comps = map[int32][]*posComp{}
	for p, rs := range per {
		slices.SortFunc(rs, func(a, b rng) int {
			if a.lo != b.lo {
				return cmpInt(a.lo, b.lo)
			}
			return cmpInt(a.hi, b.hi)
		})
		var cs []*posComp
		for _, x := range rs {
			if n := len(cs); n > 0 && x.lo <= cs[n-1].hi {
				cs[n-1].hi = max(cs[n-1].hi, x.hi)
				continue
			}
			cs = append(cs, &posComp{lo: x.lo, hi: x.hi})
		}
		d.comps[p] = cs
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// comp returns the component of the archive file of partition p holding
// [first, last], releasing the memory of the previous one.
func (d *dedup) comp(p int32, first, last int64) *posComp {
	cs := d.comps[p]
	i, _ := slices.BinarySearchFunc(cs, first, func(c *posComp, t int64) int {
		if c.hi < t {
			return -1
		}
		if c.lo > t {
			return 1
		}
		return 0
	})
	var c *posComp
	if i < len(cs) && cs[i].lo <= first && first <= cs[i].hi {
		c = cs[i]
	} else { // a file the plan did not list: on its own
		c = &posComp{lo: first, hi: last}
	}
	if d.cur != nil && d.cur != c {
		d.cur.bits, d.cur.set = nil, nil
	}
	d.cur = c
	return c
}

// maxBitsetOffsets bounds the offset range deduplicated with a bitset
// (16 MiB); wider components use a map.
const maxBitsetOffsets = 1 << 27

// seen reports whether offset o was seen before in the component, marking it.
func (c *posComp) seen(o int64) bool {
	if w := c.hi - c.lo + 1; w <= maxBitsetOffsets {
		if c.bits == nil {
			c.bits = make([]uint64, (w+63)/64)
		}
		i := uint64(o - c.lo)
		m := uint64(1) << (i & 63)
		old := c.bits[i>>6]
		c.bits[i>>6] = old | m
		return old&m != 0
	}
	if c.set == nil {
		c.set = map[int64]struct{}{}
	}
	if _, ok := c.set[o]; ok {
		return true
	}
	c.set[o] = struct{}{}
	return false
}

// seenID reports whether event id id was seen before, marking it.
func (d *dedup) seenID(id []byte) bool { return d.ids.seen(id) }

// idSet is an exact set of byte strings tuned for millions of short event
// ids: an open-addressing table of (hash, arena reference) slots over one
// append-only arena of the ids' bytes. A probe compares 64-bit hashes and
// only reads the arena when they match, so an insert costs one hash and
// about one cache miss (a Go map of strings costs two lookups and a string
// compare per probe: BenchmarkReadDay/event_ids=true ran at half the speed).
// The hash seed is random per set; nothing persists.
type idSet struct {
	seed  maphash.Seed
	slots []idSlot // power-of-two length, at most half full
	n     int
	arena []byte
}

// idSlot is a used slot when h != 0; ref packs the id's arena offset
// (high 44 bits) and length (low 20 bits: an id is shorter than an event).
type idSlot struct{ h, ref uint64 }

const idLenBits = 20

func (s *idSet) seen(id []byte) bool {
	if len(id) >= 1<<idLenBits {
		id = id[:1<<idLenBits-1] // longer than any event: cannot happen
	}
	if s.slots == nil {
		s.reserve(0)
	}
	if 2*(s.n+1) > len(s.slots) {
		s.grow()
	}
	h := maphash.Bytes(s.seed, id) | 1
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &s.slots[i]
		if sl.h == 0 {
			sl.h = h
			sl.ref = uint64(len(s.arena))<<idLenBits | uint64(len(id))
			s.arena = append(s.arena, id...)
			s.n++
			return false
		}
		if sl.h == h {
			off, n := sl.ref>>idLenBits, sl.ref&(1<<idLenBits-1)
			if string(s.arena[off:off+n]) == string(id) {
				return true
			}
		}
	}
}

// reserve makes room for n more ids without growing on the way.
func (s *idSet) reserve(n int) {
	want := 1 << 12
	for want < 2*(s.n+n) {
		want *= 2
	}
	if s.slots == nil {
		s.seed = maphash.MakeSeed()
		s.slots = make([]idSlot, want)
		return
	}
	for len(s.slots) < want {
		s.grow()
	}
}

func (s *idSet) grow() {
	old := s.slots
	s.slots = make([]idSlot, 2*len(old))
	mask := uint64(len(s.slots) - 1)
	for _, sl := range old {
		if sl.h == 0 {
			continue
		}
		i := sl.h & mask
		for s.slots[i].h != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = sl
	}
}
