package state

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/tilestream/tilestream/tiling"
)

// userRowIntDictKey has integer keys in a dictionary.
type userRowIntDictKey struct {
	UserID int64 `parquet:"user_id,dict"`
	TS     int64 `parquet:"ts"`
}

// userRowPlainKey has string keys without a dictionary.
type userRowPlainKey struct {
	UserID string `parquet:"user_id"`
	TS     int64  `parquet:"ts"`
}

// TestKeyRefNamesOneKey checks tiling.Event.KeyRef's contract on every kind
// of file the offline log reads, over several reads: events with the same
// non-zero KeyRef have the same key, whatever the file, row group, page or
// read; dictionary-encoded keys get one; plain pages and JSON Lines none.
func TestKeyRefNamesOneKey(t *testing.T) {
	v := offlineTestView(t)
	l := openDirTestLog(t)
	rng := rand.New(rand.NewPCG(5, 6))
	dir := "txn/" + dateDir(day0) + "/"
	key := func() string { return fmt.Sprintf("k%d", rng.IntN(40)) }

	// The ingest's archive files (dictionary-encoded keys), two partitions.
	for p := range int32(2) {
		var rows []ArchiveRow
		for i := range 2000 {
			js := fmt.Sprintf(`{"user_id":%q,"ts":%d,"amount":1}`, key(), day0+rng.Int64N(tiling.Day))
			rows = append(rows, ArchiveRow{Event: testDecode(t, v, js, tiling.Pos{Partition: p, Offset: int64(i)})})
		}
		if _, err := l.WriteArchive(v, "", p, 0, 1999, rows); err != nil {
			t.Fatal(err)
		}
	}
	// A user's files: dictionary keys over many small row groups and pages
	// (each row group has a dictionary of its own, numbered from 0 again),
	// integer keys, plain string keys, JSON Lines.
	var dict []userRowMillis
	var ints []userRowIntDictKey
	var plain []userRowPlainKey
	jsonl := ""
	for range 3000 {
		ts := day0 + rng.Int64N(tiling.Day)
		dict = append(dict, userRowMillis{UserID: key(), TS: ts})
		ints = append(ints, userRowIntDictKey{UserID: int64(rng.IntN(40)), TS: ts})
		plain = append(plain, userRowPlainKey{UserID: key(), TS: ts})
		jsonl += fmt.Sprintf(`{"user_id":%q,"ts":%d}`+"\n", key(), ts)
	}
	l.put(dir+"dict.parquet", userParquet(t, dict, parquet.MaxRowsPerRowGroup(700), parquet.PageBufferSize(512)))
	l.put(dir+"ints.parquet", userParquet(t, ints, parquet.MaxRowsPerRowGroup(900)))
	l.put(dir+"plain.parquet", userParquet(t, plain, parquet.MaxRowsPerRowGroup(1000)))
	l.put(dir+"x.jsonl", []byte(jsonl))

	names := map[tiling.KeyRef]string{}
	named := map[int32]int{} // events with a KeyRef per partition (user files: per file)
	for range 2 {
		st, err := l.ReadDay(v, "", day0, func(e *tiling.Event) error {
			if e.KeyRef == (tiling.KeyRef{}) {
				return nil
			}
			named[e.Pos.Partition]++
			if k, ok := names[e.KeyRef]; ok && k != e.Key {
				return fmt.Errorf("KeyRef %+v names %q and %q", e.KeyRef, k, e.Key)
			}
			names[e.KeyRef] = e.Key
			return nil
		}, func(file string, row int64, reason string) { t.Errorf("bad row %s:%d: %s", file, row, reason) })
		if err != nil {
			t.Fatal(err)
		}
		if st.Events != 4000+4*3000 {
			t.Fatalf("read %d events", st.Events)
		}
	}
	for p, want := range map[int32]int{0: 4000, 1: 4000, userPartition("dict.parquet"): 6000, userPartition("ints.parquet"): 6000,
		userPartition("plain.parquet"): 0, userPartition("x.jsonl"): 0} {
		if named[p] != want {
			t.Errorf("partition %d: %d events with a KeyRef over two reads, want %d", p, named[p], want)
		}
	}
	// Many storages, each naming few keys: the names are not per index.
	if len(names) < 100 {
		t.Errorf("only %d KeyRefs over every file and read", len(names))
	}
}
