package dynamo

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Attribute names of the key.
const (
	AttrPK = "pk"
	AttrSK = "sk"
)

// MaxItemBytes is DynamoDB's item size limit (attribute names and values,
// the key included).
const MaxItemBytes = 400 << 10

// Key names one item.
type Key struct {
	PK, SK []byte
}

func (k Key) String() string { return fmt.Sprintf("%x/%x", k.PK, k.SK) }

// Item is one item: its key, binary attributes and numeric attributes. The
// table keeps nothing else.
type Item struct {
	PK, SK []byte
	Bin    map[string][]byte
	Num    map[string]int64
}

// Key returns the item's key.
func (it *Item) Key() Key { return Key{it.PK, it.SK} }

// B returns binary attribute name (nil when absent).
func (it *Item) B(name string) []byte { return it.Bin[name] }

// N returns numeric attribute name.
func (it *Item) N(name string) (int64, bool) {
	v, ok := it.Num[name]
	return v, ok
}

// SetB sets a binary attribute.
func (it *Item) SetB(name string, v []byte) {
	if it.Bin == nil {
		it.Bin = map[string][]byte{}
	}
	it.Bin[name] = v
}

// SetN sets a numeric attribute.
func (it *Item) SetN(name string, v int64) {
	if it.Num == nil {
		it.Num = map[string]int64{}
	}
	it.Num[name] = v
}

// Size is the item's size as DynamoDB counts it for the 400 KB limit and
// for capacity units: the UTF-8 length of every attribute name plus its
// value (bytes for binary; about one byte per two significant digits plus
// one for numbers).
func (it *Item) Size() int {
	n := len(AttrPK) + len(it.PK) + len(AttrSK) + len(it.SK)
	for k, v := range it.Bin {
		n += len(k) + len(v)
	}
	for k, v := range it.Num {
		n += len(k) + numSize(v)
	}
	return n
}

func numSize(v int64) int {
	s := strconv.FormatInt(v, 10)
	if s[0] == '-' {
		s = s[1:]
	}
	s = trimZeros(s)
	return (len(s)+1)/2 + 1
}

func trimZeros(s string) string {
	for len(s) > 1 && s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	return s
}

// WriteUnits is the write capacity one write of an item of size bytes
// consumes: one unit per started kilobyte.
func WriteUnits(size int) int64 { return int64(max(1, (size+1023)/1024)) }

// ReadUnits is the capacity a strongly consistent read of size bytes
// consumes: one unit per started 4 KB.
func ReadUnits(size int) int64 { return int64(max(1, (size+4095)/4096)) }

func (it *Item) marshal() map[string]types.AttributeValue {
	m := make(map[string]types.AttributeValue, 2+len(it.Bin)+len(it.Num))
	m[AttrPK] = &types.AttributeValueMemberB{Value: it.PK}
	m[AttrSK] = &types.AttributeValueMemberB{Value: it.SK}
	for k, v := range it.Bin {
		m[k] = &types.AttributeValueMemberB{Value: v}
	}
	for k, v := range it.Num {
		m[k] = &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
	}
	return m
}

func (k Key) marshal() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: &types.AttributeValueMemberB{Value: k.PK},
		AttrSK: &types.AttributeValueMemberB{Value: k.SK},
	}
}

func unmarshal(m map[string]types.AttributeValue) (*Item, error) {
	it := &Item{}
	for k, av := range m {
		switch v := av.(type) {
		case *types.AttributeValueMemberB:
			switch k {
			case AttrPK:
				it.PK = v.Value
			case AttrSK:
				it.SK = v.Value
			default:
				it.SetB(k, v.Value)
			}
		case *types.AttributeValueMemberN:
			n, err := strconv.ParseInt(v.Value, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("dynamo: attribute %s: %w", k, err)
			}
			it.SetN(k, n)
		default:
			return nil, fmt.Errorf("dynamo: attribute %s has type %T; tilestream writes only binary and numbers", k, av)
		}
	}
	if it.PK == nil || it.SK == nil {
		return nil, fmt.Errorf("dynamo: item without a binary pk and sk")
	}
	return it, nil
}

// keyString is a map key for a Key.
func keyString(pk, sk []byte) string {
	var b bytes.Buffer
	b.Grow(len(pk) + len(sk) + 4)
	b.WriteString(strconv.Itoa(len(pk)))
	b.WriteByte(':')
	b.Write(pk)
	b.Write(sk)
	return b.String()
}

// MapKey returns a string naming k, for maps.
func (k Key) MapKey() string { return keyString(k.PK, k.SK) }
