package dynamo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// scanner is the SDK call ScanPrefixes needs. It is not part of API, so
// that wrappers of API stay as they are: the SDK client has it, and a
// wrapper that lacks it makes ScanPrefixes fail with ErrNoScan.
type scanner interface {
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// ErrNoScan is returned by ScanPrefixes over a client without Scan.
var ErrNoScan = errors.New("dynamo: the client has no Scan")

// ScanPrefixes reads the whole table in pages (strongly consistent) and
// calls page with the items of each whose partition key begins with one of
// prefixes, and the key to resume after (nil after the last page). The scan
// starts after start (nil: at the beginning), a key that page returned
// before: a scan cut anywhere resumes there. limit bounds the items each
// page evaluates (0: DynamoDB's 1 MB). Every item of the table is read: it
// costs the table's size in read units, whatever the prefixes.
func (t *Table) ScanPrefixes(ctx context.Context, prefixes [][]byte, start *Key, limit int32, page func(items []*Item, next *Key) error) error {
	sc, ok := t.api.(scanner)
	if !ok {
		return ErrNoScan
	}
	names := map[string]string{"#pk": AttrPK}
	values := map[string]types.AttributeValue{}
	var parts []string
	for i, p := range prefixes {
		v := fmt.Sprintf(":p%d", i)
		values[v] = &types.AttributeValueMemberB{Value: p}
		parts = append(parts, "begins_with(#pk, "+v+")")
	}
	in := &dynamodb.ScanInput{
		TableName:                 &t.name,
		ConsistentRead:            aws.Bool(true),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}
	if len(parts) > 0 {
		in.FilterExpression = aws.String(strings.Join(parts, " OR "))
	} else {
		in.ExpressionAttributeNames, in.ExpressionAttributeValues = nil, nil
	}
	if limit > 0 {
		in.Limit = aws.Int32(limit)
	}
	if start != nil {
		in.ExclusiveStartKey = start.marshal()
	}
	for {
		cctx, cancel := t.call(ctx)
		t.m.request("Scan", false)
		begin := time.Now()
		out, err := sc.Scan(cctx, in)
		cancel()
		t.m.duration.WithLabelValues("Scan").Observe(time.Since(begin).Seconds())
		if err != nil {
			t.m.failed("Scan", err)
			return fmt.Errorf("scan: %w", err)
		}
		items := make([]*Item, 0, len(out.Items))
		size := 0
		for _, m := range out.Items {
			it, err := unmarshal(m)
			if err != nil {
				return err
			}
			size += it.Size()
			t.m.Stats.ItemsRead.Add(1)
			if !hasPrefix(it.PK, prefixes) {
				continue // see hasPrefix
			}
			items = append(items, it)
		}
		// Filtered items cost their read units too; count what came back.
		t.m.read("Scan", ReadUnits(size))
		var next *Key
		if len(out.LastEvaluatedKey) > 0 {
			k, err := unmarshal(out.LastEvaluatedKey)
			if err != nil {
				return fmt.Errorf("scan: last evaluated key: %w", err)
			}
			next = &Key{PK: k.PK, SK: k.SK}
		}
		if err := page(items, next); err != nil {
			return err
		}
		if next == nil {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// hasPrefix reports whether pk begins with one of prefixes (any pk when
// there are none). DynamoDB's filter compares the bytes, but dynalite, which
// the tests run against, decodes both as UTF-8 text first: every byte that
// is no part of a valid sequence becomes U+FFFD, so that a prefix ending in
// incarnation 0x80808080 matches the items of 0x81818181 (about one pair of
// random incarnations in 600). The scan's callers rewrite or delete what it
// returns: it keeps to what it promises whatever the server.
func hasPrefix(pk []byte, prefixes [][]byte) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if bytes.HasPrefix(pk, p) {
			return true
		}
	}
	return false
}
