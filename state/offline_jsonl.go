package state

import (
	"bufio"
	"errors"
	"io"
	"math"
	"time"

	"github.com/valyala/fastjson"

	"github.com/tilestream/tilestream/tiling"
)

// JSON Lines files hold one event object per line, exactly as on the Kafka
// topic, decoded by the ingest's own decoder (tiling.Decoder) so that a file
// and the stream give the same events. Blank lines are skipped; a line longer
// than offlineMaxEventBytes is rejected as oversized. The event time is not
// checked against the wall clock (a backfill may be dated anywhere) but must
// fall on the file's date.

const offlineMaxEventBytes = 1 << 20

func (r *dayReader) decoder() *tiling.Decoder {
	if r.dec == nil {
		r.dec = &tiling.Decoder{
			Views:         []*tiling.View{r.v},
			MaxEventBytes: offlineMaxEventBytes,
			MaxKeyBytes:   offlineMaxKeyBytes,
			FutureSkew:    math.MaxInt64 / 2,
		}
	}
	return r.dec
}

// readLines decodes the lines of src; only fn's error is returned.
func (r *dayReader) readLines(fc *fileCtx, src io.Reader) error {
	br := bufio.NewReaderSize(src, 64<<10)
	dec := r.decoder()
	now := time.Now().UnixMilli()
	for line := int64(0); ; line++ {
		b, oversized, err := r.readLine(br)
		if err != nil && err != io.EOF {
			// The line was cut by the error: report the file, not the line.
			r.badFile(fc, "read: "+err.Error())
			return nil
		}
		if len(b) > 0 || oversized {
			if rerr := r.jsonLine(fc, dec, line, b, oversized, now); rerr != nil {
				return rerr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// readLine returns the next line without its end, trimmed of surrounding
// white space; oversized when it is longer than offlineMaxEventBytes (then
// its bytes are dropped).
func (r *dayReader) readLine(br *bufio.Reader) (b []byte, oversized bool, err error) {
	r.line = r.line[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if !oversized {
			if len(r.line)+len(chunk) > offlineMaxEventBytes+2 { // +2: the line end
				oversized, r.line = true, r.line[:0]
			} else {
				r.line = append(r.line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if oversized {
			return nil, true, err
		}
		return trimJSONSpace(r.line), false, err
	}
}

func (r *dayReader) jsonLine(fc *fileCtx, dec *tiling.Decoder, line int64, b []byte, oversized bool, now int64) error {
	r.stats.Rows++
	if oversized {
		r.badRow(fc, line+1, tiling.ReasonOversized)
		return nil
	}
	dec.Decode(b, tiling.Pos{Partition: fc.userPart, Offset: line}, now, &r.decoded)
	if reason := r.decoded.Reasons[0]; reason != "" {
		r.badRow(fc, line+1, reason)
		return nil
	}
	ev := &r.decoded.Events[0]
	if dayOf(ev.TS) != r.date {
		r.badRow(fc, line+1, ReasonOutsideDate)
		return nil
	}
	var id []byte
	switch {
	case r.idField == "":
	case r.idField == r.v.EventID:
		id = stringBytes(ev.ID) // the decoder took it
	default:
		id = r.jsonID(b)
	}
	ev.ID = "" // as for Parquet rows: the identity is consumed here
	if err := r.emit(fc, ev, id); err != nil {
		return err.(fnError).err
	}
	return nil
}

// jsonID returns the event id of a decoded line with the decoder's rule:
// the id field's string text or number literal; nil for none.
func (r *dayReader) jsonID(b []byte) []byte {
	v, err := r.jp.ParseBytes(b)
	if err != nil {
		return nil
	}
	f := v.Get(r.idField)
	if f == nil {
		return nil
	}
	switch f.Type() {
	case fastjson.TypeString:
		s, _ := f.StringBytes()
		return s
	case fastjson.TypeNumber:
		r.idBuf = f.MarshalTo(r.idBuf[:0])
		return r.idBuf
	}
	return nil
}

// trimJSONSpace trims JSON white space (space, tab, CR, LF) around b.
func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}
