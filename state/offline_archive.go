package state

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"

	"github.com/tilestream/tilestream/tiling"
)

// Archive files. One Parquet file holds the events of one partition, handled
// in one offset range, whose event time falls on one UTC date. One row per
// event, sorted by (event time, offset); columns (parquet-go orders the
// fields of a group by name):
//
//	<v.Entity>     required string (dictionary encoded)          the key
//	<v.Timestamp>  required int64 TIMESTAMP(MILLIS, UTC)          event time
//	<column>       per View.Columns(), optional:
//	                 double       when the column is numeric and not raw
//	                 string JSON  otherwise: the value's compact JSON text
//	                              exactly as in tiling.Input.Raw
//	_partition     required int32                                 Kafka partition
//	_offset        required int64                                 Kafka offset
//	<event id>     optional string, when the view has an event_id field
//
// A null value column is an absent (or JSON null) field. A value column
// whose name is taken by the key, timestamp, _partition, _offset or event id
// column is stored as "_value_<name>"; an event id field named like the key,
// timestamp, _partition or _offset as "_event_id". Key-value metadata:
// tilestream.format=1, tilestream.json_columns=<the JSON text columns, comma
// separated> and, with an event id, tilestream.event_id_column=<its column>.
//
// A column no function reads the value of (count over a field) keeps only
// whether the field was a number: a number's shortest text, or "{}" for any
// other value when its text was not kept.
//
// The bytes are a function of the rows alone: same rows in any order, same
// file. Snappy compression and row groups of archiveRowGroupRows rows keep
// reads fast (see BenchmarkReadDay).

const (
	archiveFormat         = "1"
	metaFormat            = "tilestream.format"
	metaJSONColumns       = "tilestream.json_columns"
	metaEventIDColumn     = "tilestream.event_id_column"
	colPartition          = "_partition"
	colOffset             = "_offset"
	archiveRowGroupRows   = 128 << 10
	archivePageBufferSize = 512 << 10
	// maxEventTime bounds event times as the decoder does (±2^53 ms, about
	// ±285,000 years), so every date directory name parses back.
	maxEventTime = 1 << 53
)

// archiveLayout names the columns of a view's archive files.
type archiveLayout struct {
	key, ts string
	cols    []string // parquet column of each view column
	json    []bool   // stored as JSON text (else double)
	id      string   // event id column; "" for none
}

func newArchiveLayout(v *tiling.View, idField string) (archiveLayout, error) {
	lay := archiveLayout{key: v.Entity, ts: v.Timestamp}
	if v.Entity == v.Timestamp {
		return lay, fmt.Errorf("offline log: view %q: entity and timestamp are the same field %q", v.Name, v.Entity)
	}
	taken := map[string]bool{v.Entity: true, v.Timestamp: true, colPartition: true, colOffset: true}
	if idField != "" {
		lay.id = idField
		if taken[idField] {
			lay.id = "_event_id"
		}
		taken[lay.id] = true
	}
	for i, c := range v.Columns() {
		name := c
		if taken[c] {
			name = "_value_" + c
		}
		lay.cols = append(lay.cols, name)
		lay.json = append(lay.json, !(v.ColumnNumeric(i) && !v.ColumnRaw(i)))
	}
	seen := map[string]bool{}
	for _, n := range append([]string{lay.key, lay.ts, colPartition, colOffset, lay.id}, lay.cols...) {
		if n == "" {
			continue
		}
		if seen[n] {
			return lay, fmt.Errorf("offline log: view %q: two archive columns would be named %q", v.Name, n)
		}
		seen[n] = true
	}
	return lay, nil
}

func (lay archiveLayout) schema() *parquet.Schema {
	g := parquet.Group{
		lay.key:      parquet.Encoded(parquet.String(), &parquet.RLEDictionary),
		lay.ts:       parquet.Encoded(parquet.Timestamp(parquet.Millisecond), &parquet.DeltaBinaryPacked),
		colPartition: parquet.Encoded(parquet.Int(32), &parquet.DeltaBinaryPacked),
		colOffset:    parquet.Encoded(parquet.Int(64), &parquet.DeltaBinaryPacked),
	}
	for i, c := range lay.cols {
		if lay.json[i] {
			g[c] = parquet.Optional(parquet.Encoded(parquet.JSON(), &parquet.RLEDictionary))
		} else {
			g[c] = parquet.Optional(parquet.Leaf(parquet.DoubleType))
		}
	}
	if lay.id != "" {
		g[lay.id] = parquet.Optional(parquet.String())
	}
	return parquet.NewSchema("tilestream_archive", g)
}

func (lay archiveLayout) jsonColumns() string {
	var names []string
	for i, c := range lay.cols {
		if lay.json[i] {
			names = append(names, c)
		}
	}
	return strings.Join(names, ",")
}

// WriteArchive writes rows — events of one partition handled in offsets
// [first, last] — into one archive file per event date,
// <view>/date=…/p<partition>-<first>-<last>.parquet. Locally each file is
// written to a temp file in the same directory, fsynced, renamed into place,
// and the directory fsynced; in S3 it is one PutObject of the whole file.
// Writing the same rows again (in any order) produces byte-identical files
// with the same names, so a retry after a crash overwrites and never
// duplicates. It returns the paths written, relative to
// the root, by date. Rows must belong to partition, lie in [first, last] and
// have distinct offsets; no rows write nothing.
func (l *OfflineLog) WriteArchive(v *tiling.View, eventIDField string, partition int32, first, last int64, rows []ArchiveRow) ([]string, error) {
	if err := checkViewName(v.Name); err != nil {
		return nil, err
	}
	if partition < 0 || first < 0 || first > last {
		return nil, fmt.Errorf("offline log: archive %s partition %d offsets [%d, %d]: invalid range", v.Name, partition, first, last)
	}
	lay, err := newArchiveLayout(v, eventIDField)
	if err != nil {
		return nil, err
	}
	if err := checkArchiveRows(v, partition, first, last, rows); err != nil {
		return nil, fmt.Errorf("offline log: archive %s partition %d offsets [%d, %d]: %w", v.Name, partition, first, last, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	order := make([]int32, len(rows))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		ea, eb := &rows[a].Event, &rows[b].Event
		if c := cmp.Compare(ea.TS, eb.TS); c != 0 {
			return c
		}
		return cmp.Compare(ea.Pos.Offset, eb.Pos.Offset)
	})
	w := newArchiveWriter(v, lay)
	name := archiveName(partition, first, last)
	var paths []string
	for len(order) > 0 {
		date := dayOf(rows[order[0]].Event.TS)
		n := 1
		for n < len(order) && dayOf(rows[order[n]].Event.TS) == date {
			n++
		}
		rel := v.Name + "/" + dateDir(date) + "/" + name
		if err := l.store.write(context.Background(), rel, func(f io.Writer) error { return w.write(f, rows, order[:n]) }); err != nil {
			return paths, fmt.Errorf("offline log: write %s: %w", rel, err)
		}
		paths = append(paths, rel)
		order = order[n:]
	}
	return paths, nil
}

// checkArchiveRows rejects rows that would not read back as they are.
func checkArchiveRows(v *tiling.View, partition int32, first, last int64, rows []ArchiveRow) error {
	cols := v.Columns()
	offsets := make([]int64, len(rows))
	for i := range rows {
		e := &rows[i].Event
		if e.Pos.Partition != partition || e.Pos.Offset < first || e.Pos.Offset > last {
			return fmt.Errorf("row at %d/%d is outside the partition or range", e.Pos.Partition, e.Pos.Offset)
		}
		offsets[i] = e.Pos.Offset
		if e.Key == "" {
			return fmt.Errorf("row at offset %d has an empty key", e.Pos.Offset)
		}
		if e.TS < -maxEventTime || e.TS > maxEventTime {
			return fmt.Errorf("row at offset %d: event time %d is out of range", e.Pos.Offset, e.TS)
		}
		if len(e.Inputs) != len(cols) {
			return fmt.Errorf("row at offset %d has %d inputs, the view %d columns", e.Pos.Offset, len(e.Inputs), len(cols))
		}
		for j := range e.Inputs {
			in := &e.Inputs[j]
			switch in.Kind {
			case tiling.Missing:
			case tiling.Number:
				if math.IsNaN(in.Num) || math.IsInf(in.Num, 0) {
					return fmt.Errorf("row at offset %d: column %q is not finite", e.Pos.Offset, cols[j])
				}
			case tiling.Other:
				if v.ColumnNumeric(j) {
					return fmt.Errorf("row at offset %d: numeric column %q holds a non-number", e.Pos.Offset, cols[j])
				}
			default:
				return fmt.Errorf("row at offset %d: column %q has kind %d", e.Pos.Offset, cols[j], in.Kind)
			}
			if in.Kind != tiling.Missing && v.ColumnRaw(j) && len(in.Raw) == 0 {
				return fmt.Errorf("row at offset %d: column %q lacks its raw value", e.Pos.Offset, cols[j])
			}
		}
	}
	slices.Sort(offsets)
	for i := 1; i < len(offsets); i++ {
		if offsets[i] == offsets[i-1] {
			return fmt.Errorf("offset %d appears twice", offsets[i])
		}
	}
	return nil
}

// archiveWriter turns ArchiveRows into Parquet rows of one layout.
type archiveWriter struct {
	v      *tiling.View
	lay    archiveLayout
	schema *parquet.Schema
	meta   []parquet.WriterOption
	// Leaf column index of each role.
	iKey, iTS, iPart, iOff, iID int
	iCols                       []int
	rows                        []parquet.Row
	scratch                     []byte
}

func newArchiveWriter(v *tiling.View, lay archiveLayout) *archiveWriter {
	w := &archiveWriter{v: v, lay: lay, schema: lay.schema(), iID: -1}
	idx := func(name string) int {
		c, ok := w.schema.Lookup(name)
		if !ok {
			panic("state: archive schema lacks column " + name)
		}
		return c.ColumnIndex
	}
	w.iKey, w.iTS, w.iPart, w.iOff = idx(lay.key), idx(lay.ts), idx(colPartition), idx(colOffset)
	for _, c := range lay.cols {
		w.iCols = append(w.iCols, idx(c))
	}
	w.meta = []parquet.WriterOption{
		w.schema,
		parquet.Compression(&snappy.Codec{}),
		parquet.MaxRowsPerRowGroup(archiveRowGroupRows),
		parquet.PageBufferSize(archivePageBufferSize),
		parquet.CreatedBy("tilestream", "offline-log-"+archiveFormat, "-"),
		parquet.KeyValueMetadata(metaFormat, archiveFormat),
		parquet.KeyValueMetadata(metaJSONColumns, lay.jsonColumns()),
	}
	if lay.id != "" {
		w.iID = idx(lay.id)
		w.meta = append(w.meta, parquet.KeyValueMetadata(metaEventIDColumn, lay.id))
	}
	return w
}

const archiveWriteBatch = 256

// write writes rows[order…] as one Parquet file to f.
func (w *archiveWriter) write(f io.Writer, rows []ArchiveRow, order []int32) error {
	bw := bufio.NewWriterSize(f, 1<<20)
	pw := parquet.NewWriter(bw, w.meta...)
	ncol := len(w.schema.Columns())
	if w.rows == nil {
		w.rows = make([]parquet.Row, archiveWriteBatch)
		for i := range w.rows {
			w.rows[i] = make(parquet.Row, ncol)
		}
	}
	// Values of byte arrays point into scratch until WriteRows copies them.
	for len(order) > 0 {
		n := min(len(order), archiveWriteBatch)
		w.scratch = w.scratch[:0]
		for i, ri := range order[:n] {
			w.fill(w.rows[i], &rows[ri])
		}
		if _, err := pw.WriteRows(w.rows[:n]); err != nil {
			return err
		}
		order = order[n:]
	}
	if err := pw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// fill sets row to the Parquet values of r.
func (w *archiveWriter) fill(row parquet.Row, r *ArchiveRow) {
	e := &r.Event
	row[w.iKey] = parquet.ByteArrayValue(stringBytes(e.Key)).Level(0, 0, w.iKey)
	row[w.iTS] = parquet.Int64Value(e.TS).Level(0, 0, w.iTS)
	row[w.iPart] = parquet.Int32Value(e.Pos.Partition).Level(0, 0, w.iPart)
	row[w.iOff] = parquet.Int64Value(e.Pos.Offset).Level(0, 0, w.iOff)
	for j, ci := range w.iCols {
		in := &e.Inputs[j]
		switch {
		case in.Kind == tiling.Missing:
			row[ci] = parquet.NullValue().Level(0, 0, ci)
		case !w.lay.json[j]:
			row[ci] = parquet.DoubleValue(in.Num).Level(0, 1, ci)
		default:
			row[ci] = parquet.ByteArrayValue(w.jsonText(in)).Level(0, 1, ci)
		}
	}
	if w.iID >= 0 {
		if r.EventID == "" {
			row[w.iID] = parquet.NullValue().Level(0, 0, w.iID)
		} else {
			row[w.iID] = parquet.ByteArrayValue(stringBytes(r.EventID)).Level(0, 1, w.iID)
		}
	}
}

// jsonText is the text stored for a present value of a JSON text column.
func (w *archiveWriter) jsonText(in *tiling.Input) []byte {
	if len(in.Raw) > 0 {
		return in.Raw
	}
	if in.Kind == tiling.Number {
		start := len(w.scratch)
		w.scratch = strconv.AppendFloat(w.scratch, in.Num, 'g', -1, 64)
		return w.scratch[start:len(w.scratch):len(w.scratch)]
	}
	return []byte("{}")
}
