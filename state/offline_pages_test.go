package state

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/tilestream/tilestream/tiling"
)

// TestParquetPagesOfEveryLength reads a user file whose columns break into
// pages at different rows (tiny pages, values of random widths, nulls,
// several row groups), so the reader's runs of rows end at every column's
// page boundaries in turn, and checks every event against the decoder's
// reading of the same row as JSON.
func TestParquetPagesOfEveryLength(t *testing.T) {
	v := offlineTestView(t)
	l := openDirTestLog(t)
	rng := rand.New(rand.NewPCG(11, 12))
	var rows []userRowMillis
	for range 5000 {
		r := userRowMillis{UserID: fmt.Sprintf("k%d", rng.IntN(300)), TS: day0 + rng.Int64N(tiling.Day)}
		if rng.IntN(4) > 0 {
			r.Amount = ptr(float64(rng.IntN(1e6)) / 100)
		}
		if rng.IntN(3) > 0 {
			r.Merchant = ptr(strings.Repeat("m", rng.IntN(40)) + fmt.Sprint(rng.IntN(1000)))
		}
		if rng.IntN(5) == 0 {
			r.Price = ptr(float32(rng.IntN(100)))
		}
		rows = append(rows, r)
	}
	name := "pages.parquet"
	l.put("txn/"+dateDir(day0)+"/"+name, userParquet(t, rows, parquet.PageBufferSize(300), parquet.MaxRowsPerRowGroup(1700)))
	evs, st, bads := readAll(t, l.OfflineLog, v, "", day0)
	if len(bads) > 0 || st.Events != int64(len(rows)) || len(evs) != len(rows) {
		t.Fatalf("%d events, stats %+v, bad %q", len(evs), st, bads)
	}
	part := userPartition(name)
	for i, r := range rows {
		js := fmt.Sprintf(`{"user_id":%q,"ts":%d`, r.UserID, r.TS)
		if r.Amount != nil {
			js += fmt.Sprintf(`,"amount":%v`, *r.Amount)
		}
		if r.Merchant != nil {
			js += fmt.Sprintf(`,"merchant":%q`, *r.Merchant)
		}
		if r.Price != nil {
			js += fmt.Sprintf(`,"price":%v`, *r.Price)
		}
		want := testDecode(t, v, js+"}", tiling.Pos{Partition: part, Offset: int64(i)})
		got := evs[i]
		ts := len(v.Columns()) - 1 // last(ts): the stored number, compared apart
		if got.Inputs[ts].Kind != tiling.Number || got.Inputs[ts].Num != float64(r.TS) {
			t.Fatalf("row %d: ts input %+v", i, got.Inputs[ts])
		}
		got.Inputs[ts], want.Inputs[ts] = tiling.Input{}, tiling.Input{}
		if d := eventDiff(&got, &want); d != "" {
			t.Fatalf("row %d: %s", i, d)
		}
	}
}
