package state

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/deprecated"
	"github.com/parquet-go/parquet-go/encoding"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// Reading Parquet files column by column. Each column a read needs gets a
// pqCursor that walks the pages of one column chunk and yields, row by row,
// the index of the row's value in typed slices that alias the current page
// (or its dictionary): no Value boxing, no per-row allocation. Only flat
// columns (top-level, not repeated) are read; that is every column of the
// archive files and what a user file must have for the view's fields.

// errCorrupt marks a Parquet file whose structure is inconsistent.
var errCorrupt = errors.New("corrupt Parquet data")

// valueConv says how a column's values become event data.
type valueConv uint8

const (
	convNone    valueConv = iota // unsupported type
	convBool                     // BOOLEAN
	convInt                      // INT32/INT64 (signed)
	convUint                     // INT32/INT64 with an unsigned INT logical type
	convDecimal                  // INT32/INT64 DECIMAL(scale)
	convFloat                    // FLOAT
	convDouble                   // DOUBLE
	convString                   // BYTE_ARRAY text
	convJSON                     // BYTE_ARRAY holding JSON text
	convInt96                    // INT96 (legacy nanosecond timestamps)
	convDate                     // INT32 DATE (days)
)

// pqColumn is one flat column of a file and how to read it.
type pqColumn struct {
	col   *parquet.Column
	name  string
	index int
	kind  parquet.Kind
	conv  valueConv
	scale int32 // convDecimal
	// tsUnit divides an INT64 TIMESTAMP to milliseconds: 1, 1000 or 1e6; 0
	// when the column is no timestamp.
	tsUnit   int64
	optional bool
}

// lookupColumn finds the top-level flat column name of f. It returns nil when
// there is none, and an error when the field exists but cannot be read.
func lookupColumn(f *parquet.File, name string, json bool) (*pqColumn, error) {
	c := f.Root().Column(name)
	if c == nil {
		return nil, nil
	}
	if !c.Leaf() || c.Repeated() {
		return nil, fmt.Errorf("column %q is not a flat column", name)
	}
	pc := &pqColumn{col: c, name: name, index: c.Index(), kind: c.Type().Kind(), optional: c.Optional()}
	lt := c.Type().LogicalType()
	var ltv format.LogicalTypeValue
	if lt != nil {
		ltv = lt.Value
	}
	switch pc.kind {
	case parquet.Boolean:
		pc.conv = convBool
	case parquet.Int32, parquet.Int64:
		pc.conv = convInt
		switch t := ltv.(type) {
		case *format.IntType:
			if !t.IsSigned {
				pc.conv = convUint
			}
		case *format.DecimalType:
			pc.conv, pc.scale = convDecimal, t.Scale
			if t.Scale < 0 || t.Scale > 30 {
				return nil, fmt.Errorf("column %q: unsupported decimal scale %d", name, t.Scale)
			}
		case *format.DateType:
			pc.conv = convDate
		case *format.TimestampType:
			if pc.kind == parquet.Int64 {
				switch t.Unit.Value.(type) {
				case *format.MilliSeconds:
					pc.tsUnit = 1
				case *format.MicroSeconds:
					pc.tsUnit = 1000
				case *format.NanoSeconds:
					pc.tsUnit = 1_000_000
				}
			}
		case *format.TimeType:
			return nil, fmt.Errorf("column %q: unsupported type %s", name, lt)
		}
	case parquet.Float:
		pc.conv = convFloat
	case parquet.Double:
		pc.conv = convDouble
	case parquet.ByteArray:
		pc.conv = convString
		switch ltv.(type) {
		case *format.JsonType:
			pc.conv = convJSON
		case *format.DecimalType, *format.BsonType:
			return nil, fmt.Errorf("column %q: unsupported type %s", name, lt)
		}
		if json {
			pc.conv = convJSON
		}
	case parquet.Int96:
		pc.conv = convInt96
	default:
		return nil, fmt.Errorf("column %q: unsupported type %s", name, c.Type())
	}
	return pc, nil
}

// pqCursor walks one column chunk row by row.
type pqCursor struct {
	col   *pqColumn
	pages parquet.Pages
	page  parquet.Page
	// fresh: byte arrays are copied into memory owned by the reader and never
	// reused (event keys are strings into it); otherwise they alias pages.
	fresh bool

	err          error   // sticky: the chunk cannot be read further
	def          []byte  // definition levels of the page; nil when required
	rows         []int32 // per row of the page: its value's index, -1 for null
	pos          int     // next row
	idx          []int32
	storIsDict   bool // the storage is lastDict's values
	lastDict     parquet.Dictionary
	dictCopy     []byte
	dictCopyOffs []uint32

	// The value storage the indexes point into: the page's values, or its
	// dictionary's.
	i32   []int32
	i64   []int64
	f32   []float32
	f64   []float64
	bits  []byte
	i96   []deprecated.Int96
	bdata []byte
	boffs []uint32
	nstor int // values in the storage
	// gen names the storage: a new process-wide number whenever the
	// storage changes (tiling.KeyRef.Store).
	gen uint64
}

// storageGen numbers value storages for tiling.KeyRef: unique in the process.
var storageGen atomic.Uint64

// reset starts the cursor on a column chunk.
func (c *pqCursor) reset(col *pqColumn, chunk parquet.ColumnChunk, fresh bool) {
	c.close()
	*c = pqCursor{col: col, fresh: fresh, pages: chunk.Pages(), rows: c.rows[:0]}
}

func (c *pqCursor) close() {
	page, pages := c.page, c.pages
	c.page, c.pages = nil, nil
	// After a failed read the library's state may be broken: a panic
	// closing it is not ours to raise.
	_ = protect(func() error {
		if page != nil {
			parquet.Release(page)
		}
		if pages != nil {
			pages.Close()
		}
		return nil
	})
}

// run returns the indexes of the next n rows, which the page holds,
// without advancing (the caller moves pos).
func (c *pqCursor) run(n int) []int32 { return c.rows[c.pos : c.pos+n : c.pos+n] }

// nextPage loads the next non-empty page, converting panics of the Parquet
// library on corrupt input into errors.
func (c *pqCursor) nextPage() error {
	return protect(c.readPage)
}

func (c *pqCursor) readPage() error {
	for {
		if c.page != nil {
			parquet.Release(c.page)
			c.page = nil
		}
		p, err := c.pages.ReadPage()
		if err == io.EOF {
			return fmt.Errorf("%w: column %q ends before the row group", errCorrupt, c.col.name)
		}
		if err != nil {
			return fmt.Errorf("column %q: %w", c.col.name, err)
		}
		c.page = p
		if err := c.load(p); err != nil {
			return fmt.Errorf("%w: column %q: %v", errCorrupt, c.col.name, err)
		}
		if len(c.rows) > 0 {
			return nil
		}
	}
}

// load points the cursor at page p's levels and values, checking every
// length and index it will use.
func (c *pqCursor) load(p parquet.Page) error {
	n := int(p.NumRows())
	c.pos, c.def, c.rows = 0, nil, c.rows[:0]
	nvals := n
	if c.col.optional {
		c.def = p.DefinitionLevels()
		if len(c.def) != n {
			return fmt.Errorf("page has %d rows and %d definition levels", n, len(c.def))
		}
		nvals = 0
		for _, d := range c.def {
			if d > 1 {
				return fmt.Errorf("definition level %d in a flat column", d)
			}
			nvals += int(d)
		}
	} else if d := p.DefinitionLevels(); len(d) != 0 {
		return errors.New("definition levels in a required column")
	}
	vals := p.Data()
	c.idx = nil
	dict := p.Dictionary()
	if dict == nil {
		c.storIsDict = false
		if err := c.store(&vals, nvals, false); err != nil {
			return err
		}
		c.index(n, nil)
		return nil
	}
	idx := vals.Int32()
	if len(idx) < nvals {
		return fmt.Errorf("page has %d dictionary indexes for %d values", len(idx), nvals)
	}
	c.idx = idx[:nvals]
	if dict != c.lastDict {
		c.lastDict, c.dictCopy, c.storIsDict = dict, nil, false
	}
	if !c.storIsDict {
		if c.dictCopy != nil {
			c.bdata, c.boffs, c.nstor = c.dictCopy, c.dictCopyOffs, len(c.dictCopyOffs)-1
			c.gen = storageGen.Add(1)
		} else {
			dv := dict.Page().Data()
			if err := c.store(&dv, dict.Len(), true); err != nil {
				return fmt.Errorf("dictionary: %w", err)
			}
		}
		c.storIsDict = true
	}
	for _, i := range c.idx {
		if i < 0 || int(i) >= c.nstor {
			return fmt.Errorf("dictionary index %d out of %d", i, c.nstor)
		}
	}
	c.index(n, c.idx)
	return nil
}

// index fills c.rows for a page of n rows: each row's index into the
// storage (idx[value] for dictionary pages, else the value's position), -1
// for nulls.
func (c *pqCursor) index(n int, idx []int32) {
	if cap(c.rows) < n {
		c.rows = takeRows(n)
	}
	rows := c.rows[:n]
	c.rows = rows
	switch {
	case c.def == nil && idx == nil:
		for i := range rows {
			rows[i] = int32(i)
		}
	case c.def == nil:
		copy(rows, idx)
	default:
		k := int32(0)
		for i, d := range c.def {
			switch {
			case d == 0:
				rows[i] = -1
			case idx != nil:
				rows[i] = idx[k]
				k++
			default:
				rows[i] = k
				k++
			}
		}
	}
}

// rowsPool keeps cursors' row indexes between day reads: a page's index
// is as long as the page has rows, and a heal reads day after day.
var rowsPool sync.Pool // of *[]int32

// takeRows returns room for n row indexes, from the pool when it has
// enough.
func takeRows(n int) []int32 {
	if p, _ := rowsPool.Get().(*[]int32); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]int32, n)
}

// release gives the cursor's row indexes back to the pool; the cursor
// must not be used after.
func (c *pqCursor) release() {
	if cap(c.rows) > 0 {
		rows := c.rows[:0]
		c.rows = nil
		rowsPool.Put(&rows)
	}
}

// store points the storage at values holding at least n values.
func (c *pqCursor) store(vals *encoding.Values, n int, isDict bool) error {
	c.nstor = n
	c.gen = storageGen.Add(1)
	short := func(have int) error {
		if have < n {
			return fmt.Errorf("%d values stored for %d", have, n)
		}
		return nil
	}
	switch c.col.kind {
	case parquet.Boolean:
		c.bits = vals.Boolean()
		return short(len(c.bits) * 8)
	case parquet.Int32:
		c.i32 = vals.Int32()
		return short(len(c.i32))
	case parquet.Int64:
		c.i64 = vals.Int64()
		return short(len(c.i64))
	case parquet.Float:
		c.f32 = vals.Float()
		return short(len(c.f32))
	case parquet.Double:
		c.f64 = vals.Double()
		return short(len(c.f64))
	case parquet.Int96:
		c.i96 = vals.Int96()
		return short(len(c.i96))
	case parquet.ByteArray:
		data, offs := vals.ByteArray()
		if len(offs) < n+1 {
			return fmt.Errorf("%d offsets for %d values", len(offs), n)
		}
		offs = offs[:n+1]
		prev := offs[0]
		for _, o := range offs[1:] {
			if o < prev {
				return errors.New("byte array offsets decrease")
			}
			prev = o
		}
		if int64(prev) > int64(len(data)) {
			return fmt.Errorf("byte array offsets reach %d past %d bytes", prev, len(data))
		}
		if c.fresh {
			// Keys become strings into this copy: never reuse it.
			data = append([]byte(nil), data[:prev]...)
			offs = append([]uint32(nil), offs...)
			if isDict {
				c.dictCopy, c.dictCopyOffs = data, offs
			}
		}
		c.bdata, c.boffs = data, offs
		return nil
	}
	return fmt.Errorf("unsupported physical type %s", c.col.kind)
}

// bytes returns byte-array value k.
func (c *pqCursor) bytes(k int) []byte {
	a, b := c.boffs[k], c.boffs[k+1]
	return c.bdata[a:b:b]
}

// bool returns boolean value k.
func (c *pqCursor) bool(k int) bool { return c.bits[k>>3]>>(k&7)&1 != 0 }

// int returns integer value k of an INT32 or INT64 column.
func (c *pqCursor) int(k int) int64 {
	if c.col.kind == parquet.Int32 {
		if c.col.conv == convUint {
			return int64(uint32(c.i32[k]))
		}
		return int64(c.i32[k])
	}
	return c.i64[k]
}

// int96Nanos converts a legacy INT96 timestamp (nanoseconds of the day, then
// the Julian day) to nanoseconds since the epoch, saturating.
func int96Nanos(v deprecated.Int96) (int64, bool) {
	nanos := int64(uint64(v[1])<<32 | uint64(v[0]))
	days := int64(v[2]) - 2440588 // Julian day of 1970-01-01
	const dayNanos = 86400 * 1_000_000_000
	if days > 100_000 || days < -100_000 || nanos < 0 || nanos >= dayNanos*2 {
		return 0, false
	}
	return days*dayNanos + nanos, true
}

// openParquet opens a Parquet file for column reads. It checks the footer
// length itself first (the library allocates whatever a corrupt footer
// claims, up to 4 GiB) and turns a library panic on a malformed footer into
// an error.
func openParquet(r io.ReaderAt, size int64) (f *parquet.File, err error) {
	var tail [8]byte
	if size < 12 {
		return nil, fmt.Errorf("%w: %d bytes is too short", errCorrupt, size)
	}
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return nil, err
	}
	switch string(tail[4:]) {
	case "PAR1":
	case "PARE":
		return nil, fmt.Errorf("%w: an encrypted Parquet file (PARE footer), which is not supported", errCorrupt)
	default:
		return nil, fmt.Errorf("%w: no Parquet footer (the file does not end in PAR1: not Parquet, or cut short)", errCorrupt)
	}
	if n := int64(binary.LittleEndian.Uint32(tail[:4])); n > size-12 {
		return nil, fmt.Errorf("%w: footer of %d bytes in a file of %d", errCorrupt, n, size)
	}
	err = protect(func() error {
		f, err = parquet.OpenFile(r, size,
			parquet.SkipPageIndex(true),
			parquet.SkipBloomFilters(true),
			parquet.ReadBufferSize(256<<10),
		)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, rg := range f.Metadata().RowGroups {
		for _, c := range rg.Columns {
			m := &c.MetaData
			start := m.DataPageOffset
			if m.DictionaryPageOffset > 0 && m.DictionaryPageOffset < start {
				start = m.DictionaryPageOffset
			}
			if start < 4 || m.TotalCompressedSize < 0 || m.TotalCompressedSize > size-start {
				return nil, fmt.Errorf("%w: a column chunk lies outside the file", errCorrupt)
			}
		}
	}
	return f, nil
}

// Bounds of a page that checkChunkPages lets through: far above what Parquet
// writers produce (pages of about 1 MiB), far below what a corrupt header
// may claim (parquet-go allocates what headers say before it reads).
const (
	maxPageBytes  = 256 << 20
	maxPageValues = 1 << 24
)

// checkChunkPages walks the page headers of a column chunk of a row group of
// rows rows and rejects any page whose sizes the chunk cannot hold.
//
// It also refuses LZ4: parquet-go's LZ4 decoder doubles its buffer for ever
// on corrupt input. Files compressed with snappy, zstd, gzip or brotli, or
// not at all, are read.
//
// With needCRC (archive files: parquet-go writes a CRC-32 into every page
// header and checks it before decoding) a page without one is refused too,
// so damaged page data is caught before the decoders trust lengths in it.
func checkChunkPages(r io.ReaderAt, m *format.ColumnMetaData, rows int64, needCRC bool) error {
	switch m.Codec {
	case format.Uncompressed, format.Snappy, format.Zstd, format.Gzip, format.Brotli:
	default:
		return fmt.Errorf("compression %s is not supported (use snappy or zstd)", m.Codec)
	}
	start := m.DataPageOffset
	if m.DictionaryPageOffset > 0 && m.DictionaryPageOffset < start {
		start = m.DictionaryPageOffset
	}
	end := start + m.TotalCompressedSize
	var proto thrift.CompactProtocol
	cr := &countingReader{}
	br := bufio.NewReaderSize(cr, 1024)
	for pos := start; pos < end; {
		cr.r, cr.n = io.NewSectionReader(r, pos, end-pos), 0
		br.Reset(cr)
		var h format.PageHeader
		if err := thrift.NewDecoder(proto.NewReader(br)).Decode(&h); err != nil {
			return fmt.Errorf("%w: page header at %d: %v", errCorrupt, pos, err)
		}
		pos += cr.n - int64(br.Buffered())
		values := int64(-1)
		switch {
		case h.DataPageHeader.Valid:
			values = int64(h.DataPageHeader.V.NumValues)
		case h.DataPageHeaderV2.Valid:
			values = max(int64(h.DataPageHeaderV2.V.NumValues), int64(h.DataPageHeaderV2.V.NumRows))
		case h.DictionaryPageHeader.Valid:
			values = int64(h.DictionaryPageHeader.V.NumValues)
		}
		switch {
		case h.CompressedPageSize < 0 || int64(h.CompressedPageSize) > end-pos:
			return fmt.Errorf("%w: page at %d claims %d bytes, the chunk has %d left", errCorrupt, pos, h.CompressedPageSize, end-pos)
		case h.UncompressedPageSize < 0 || h.UncompressedPageSize > maxPageBytes:
			return fmt.Errorf("%w: page at %d claims %d uncompressed bytes", errCorrupt, pos, h.UncompressedPageSize)
		case values > maxPageValues || !h.DictionaryPageHeader.Valid && values > rows:
			return fmt.Errorf("%w: page at %d claims %d values", errCorrupt, pos, values)
		case needCRC && h.CRC == 0:
			return fmt.Errorf("%w: page at %d has no checksum", errCorrupt, pos)
		}
		pos += int64(h.CompressedPageSize)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// protect runs fn, turning a panic of the Parquet library on corrupt input
// into an error. It must not wrap calls of the caller's fn: their panics are
// theirs.
func protect(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic: %v", errCorrupt, r)
		}
	}()
	return fn()
}
