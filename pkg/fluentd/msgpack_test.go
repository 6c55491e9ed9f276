package fluentd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// transcodeCases are JSON records with what must survive the trip to
// MessagePack: every JSON type, nesting, escapes, non-ASCII text, integer
// edges, floats, and objects and arrays past the 15 members of a fixmap.
var transcodeCases = []string{
	`{}`,
	`{"a":1}`,
	`{"ei":0,"event":"session.start","uid":"u-1","time":"2026-12-01T10:00:00.123456789Z","nested":{"x":[1,2,{"y":null}],"ok":true,"no":false}}`,
	`{"s":"quote \" backslash \\ slash \/ \b\f\n\r\t ctl \u0001 é 😀 \u00e9 \ud83d\ude00 lone \ud800 x"}`,
	`{"ints":[0,1,-1,127,128,-32,-33,255,256,-128,-129,65535,65536,-32768,-32769,4294967295,4294967296,-2147483648,-2147483649,9223372036854775807,-9223372036854775808,18446744073709551615]}`,
	`{"big":18446744073709551616,"neg":-9223372036854775809}`,
	`{"floats":[0.5,-1.25,1e10,1E-7,3.141592653589793,-0.0,1.7976931348623157e308,5e-324]}`,
	`{"empty":{},"arr":[],"str":""}`,
	`  {"ws" : [ 1 , 2 ] , "k" : { } }  `,
	`{"invalid utf8":"` + "a\xffb" + `"}`,
	`{"dup":1,"dup":2}`,
}

func init() {
	// 20 members (map 16), and an array of 70,000 (array 32).
	var b strings.Builder
	b.WriteString(`{`)
	for i := range 20 {
		fmt.Fprintf(&b, `"k%02d":%d,`, i, i)
	}
	b.WriteString(`"long":[`)
	for i := range 70000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", i%300)
	}
	b.WriteString(`],"s":"` + strings.Repeat("x", 70000) + `"}`)
	transcodeCases = append(transcodeCases, b.String())
}

func transcode(t *testing.T, src string) []byte {
	t.Helper()
	var tr transcoder
	if err := tr.record([]byte(src)); err != nil {
		t.Fatalf("transcode %.80q: %v", src, err)
	}
	return tr.out
}

// TestTranscodeMatchesEncodingJSON decodes the MessagePack with an
// independent decoder (vmihailenco/msgpack) and compares it with what
// encoding/json reads from the same JSON: values, types of numbers, and the
// order of keys.
func TestTranscodeMatchesEncodingJSON(t *testing.T) {
	for _, src := range transcodeCases {
		mp := transcode(t, src)
		dec := msgpack.NewDecoder(bytes.NewReader(mp))
		got, err := decodeOrdered(dec)
		if err != nil {
			t.Fatalf("decode MessagePack of %.80q: %v", src, err)
		}
		if dec.Buffered().(*bytes.Reader).Len() != 0 {
			t.Fatalf("%.80q: bytes left after the value", src)
		}
		jd := json.NewDecoder(strings.NewReader(src))
		jd.UseNumber()
		want, err := jsonOrdered(jd)
		if err != nil {
			t.Fatalf("encoding/json %.80q: %v", src, err)
		}
		if err := sameValue(got, want, "$"); err != nil {
			t.Errorf("%.80q: %v", src, err)
		}
	}
}

// kv is one member of an object, in order.
type kv struct {
	k string
	v any
}

func decodeOrdered(d *msgpack.Decoder) (any, error) {
	code, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	if code>>4 == 0x8 || code == 0xde || code == 0xdf {
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		obj := make([]kv, 0, n)
		for range n {
			k, err := d.DecodeString()
			if err != nil {
				return nil, err
			}
			v, err := decodeOrdered(d)
			if err != nil {
				return nil, err
			}
			obj = append(obj, kv{k, v})
		}
		return obj, nil
	}
	if code>>4 == 0x9 || code == 0xdc || code == 0xdd {
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		arr := make([]any, 0, n)
		for range n {
			v, err := decodeOrdered(d)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, nil
	}
	return d.DecodeInterface()
}

func jsonOrdered(d *json.Decoder) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		var obj []kv
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			v, err := jsonOrdered(d)
			if err != nil {
				return nil, err
			}
			obj = append(obj, kv{k.(string), v})
		}
		_, err := d.Token()
		return obj, err
	case json.Delim('['):
		arr := []any{}
		for d.More() {
			v, err := jsonOrdered(d)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := d.Token()
		return arr, err
	}
	return tok, nil
}

// sameValue compares a decoded MessagePack value with encoding/json's:
// a JSON integer must be a MessagePack integer of the same value when it
// fits 64 bits, every other number a float64 equal to encoding/json's.
func sameValue(got, want any, path string) error {
	switch w := want.(type) {
	case []kv:
		g, ok := got.([]kv)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: got %T %v, want an object of %d members", path, got, got, len(w))
		}
		for i := range w {
			if g[i].k != w[i].k {
				return fmt.Errorf("%s: member %d is %q, want %q (order kept)", path, i, g[i].k, w[i].k)
			}
			if err := sameValue(g[i].v, w[i].v, path+"."+w[i].k); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: got %T, want an array of %d", path, got, len(w))
		}
		for i := range w {
			if err := sameValue(g[i], w[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case json.Number:
		wantInt, isInt := new(big.Int).SetString(string(w), 10)
		if isInt && wantInt.IsInt64() || isInt && wantInt.IsUint64() {
			var gotInt *big.Int
			switch g := got.(type) {
			case int8, int16, int32, int64:
				gotInt = big.NewInt(toInt64(g))
			case uint8, uint16, uint32, uint64:
				gotInt = new(big.Int).SetUint64(toUint64(g))
			default:
				return fmt.Errorf("%s: got %T %v, want the integer %s", path, got, got, w)
			}
			if gotInt.Cmp(wantInt) != 0 {
				return fmt.Errorf("%s: got %v, want %s", path, gotInt, w)
			}
			return nil
		}
		wf, err := w.Float64()
		if err != nil {
			return fmt.Errorf("%s: encoding/json cannot read %s: %v", path, w, err)
		}
		g, ok := got.(float64)
		if !ok || g != wf {
			return fmt.Errorf("%s: got %T %v, want float64 %v", path, got, got, wf)
		}
		return nil
	default:
		if got != want {
			return fmt.Errorf("%s: got %T %#v, want %T %#v", path, got, got, want, want)
		}
		return nil
	}
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int8:
		return int64(n)
	case int16:
		return int64(n)
	case int32:
		return int64(n)
	}
	return v.(int64)
}

func toUint64(v any) uint64 {
	switch n := v.(type) {
	case uint8:
		return uint64(n)
	case uint16:
		return uint64(n)
	case uint32:
		return uint64(n)
	}
	return v.(uint64)
}

// TestTranscodeRefusesWhatEncodingJSONRefuses: malformed records are
// errors, as they are for encoding/json; a valid value that is not an
// object is refused too (in_forward would drop it silently).
func TestTranscodeRefusesWhatEncodingJSONRefuses(t *testing.T) {
	bad := []string{``, `[1]`, `"s"`, `1`, `null`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":01}`, `{"a":1.}`,
		`{"a":-}`, `{"a":1e}`, `{"a":tru}`, `{"a":"x}`, "{\"a\":\"\x01\"}", `{"a":"\x"}`, `{"a":"\u12"}`,
		`{"a":1} {}`, `{"a":1e400}`, `{a:1}`, `{"a":[1,]}`, `{"a":[1 2]}`}
	for _, src := range bad {
		var tr transcoder
		err := tr.record([]byte(src))
		if err == nil {
			t.Errorf("%q: transcoded, want an error", src)
			continue
		}
		var v map[string]any
		if json.Unmarshal([]byte(src), &v) == nil && v != nil {
			t.Errorf("%q: refused (%v) but encoding/json reads it as an object", src, err)
		}
	}
	deep := strings.Repeat(`{"a":`, maxJSONDepth+1) + `1` + strings.Repeat(`}`, maxJSONDepth+1)
	var tr transcoder
	if err := tr.record([]byte(deep)); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Errorf("deep nesting: %v, want nested too deeply", err)
	}
}
