package dynamo

import (
	"context"
	"slices"
	"testing"
)

// TestScanPrefixesComparesBytes: ScanPrefixes returns the items whose
// partition key begins with a prefix's bytes, and none whose key only
// reads as the same text: dynalite decodes a binary begins_with's operands
// as UTF-8, where 0x80 0x80 and 0x81 0x9f are both two U+FFFD.
func TestScanPrefixesComparesBytes(t *testing.T) {
	tb := newTable(t)
	ctx := context.Background()
	pks := [][]byte{
		{0x01, 0x80, 0x80},
		{0x01, 0x80, 0x80, 'k'},
		{0x01, 0x81, 0x9f, 'k'},
		{0x01, 0xff, 0xfe},
		{0x01, 0x80},
		{0x02, 0x80, 0x80, 'k'},
		{0x03, 'a'},
	}
	var puts []*Item
	for _, pk := range pks {
		it := &Item{PK: pk, SK: []byte{0}}
		it.SetB("v", []byte("x"))
		puts = append(puts, it)
	}
	if err := tb.BatchWrite(ctx, puts, nil); err != nil {
		t.Fatal(err)
	}
	scan := func(limit int32, prefixes ...[]byte) []string {
		var got []string
		err := tb.ScanPrefixes(ctx, prefixes, nil, limit, func(items []*Item, _ *Key) error {
			for _, it := range items {
				got = append(got, string(it.PK))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	for _, limit := range []int32{0, 2} {
		if got, want := scan(limit, []byte{0x01, 0x80, 0x80}), []string{"\x01\x80\x80", "\x01\x80\x80k"}; !slices.Equal(got, want) {
			t.Errorf("limit %d, prefix 01 80 80: %q, want %q", limit, got, want)
		}
		if got, want := scan(limit, []byte{0x01, 0x81}, []byte{0x03}), []string{"\x01\x81\x9fk", "\x03a"}; !slices.Equal(got, want) {
			t.Errorf("limit %d, prefixes 01 81 and 03: %q, want %q", limit, got, want)
		}
		if got := scan(limit); len(got) != len(pks) {
			t.Errorf("limit %d, no prefix: %q, want all %d", limit, got, len(pks))
		}
	}
}
