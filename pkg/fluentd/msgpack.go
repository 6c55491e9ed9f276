package fluentd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// This file is the small part of MessagePack the forward protocol needs to
// write: array and map headers, strings, binary headers, integers, booleans,
// EventTime, and a transcoder from JSON to MessagePack that keeps the key
// order of objects. Answers from the server are read with
// github.com/vmihailenco/msgpack (forward_conn.go).

// maxJSONDepth is the deepest nesting of arrays and objects a record may
// have, as encoding/json allows.
const maxJSONDepth = 10000

func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

func appendMapHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

func appendStrHeader(b []byte, n int) []byte {
	switch {
	case n < 32:
		return append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
}

func appendString(b []byte, s string) []byte {
	return append(appendStrHeader(b, len(s)), s...)
}

// appendBin32Header starts a bin 32 of n bytes; the forward client always
// uses the 32-bit form so the header can be written before the length is
// known (see patchBin32).
func appendBin32Header(b []byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 127:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

func appendFloat(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(f))
}

// appendEventTime writes Fluentd's EventTime: ext type 0 with 8 bytes,
// seconds then nanoseconds, each a big-endian uint32 (fixext 8).
func appendEventTime(b []byte, sec int64, nsec int) []byte {
	b = append(b, 0xd7, 0x00)
	b = binary.BigEndian.AppendUint32(b, uint32(sec))
	return binary.BigEndian.AppendUint32(b, uint32(nsec))
}

// transcoder turns one JSON value into MessagePack, appending to out. It is
// a strict JSON parser (RFC 8259, as encoding/json reads it): malformed
// input is an error, invalid UTF-8 in strings becomes U+FFFD as
// encoding/json makes it. Integers that fit int64 or uint64 become
// MessagePack integers, other numbers float 64.
type transcoder struct {
	src []byte
	pos int
	out []byte
	// scratch holds unescaped strings.
	scratch []byte
	// timeField receives the top-level "time" string, when there is one.
	timeField []byte
	hasTime   bool
	timeIsStr bool
}

var errNotObject = errors.New("the event is not a JSON object")

// record transcodes src, which must be one JSON object, and notes its
// top-level "time".
func (t *transcoder) record(src []byte) error {
	t.src, t.pos = src, 0
	t.hasTime, t.timeIsStr = false, false
	t.timeField = t.timeField[:0]
	t.skipWS()
	if t.pos >= len(t.src) || t.src[t.pos] != '{' {
		return errNotObject
	}
	if err := t.value(0); err != nil {
		return err
	}
	t.skipWS()
	if t.pos != len(t.src) {
		return t.errorf("data after the JSON object")
	}
	return nil
}

func (t *transcoder) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", t.pos, fmt.Sprintf(format, args...))
}

func (t *transcoder) skipWS() {
	for t.pos < len(t.src) {
		switch t.src[t.pos] {
		case ' ', '\t', '\n', '\r':
			t.pos++
		default:
			return
		}
	}
}

func (t *transcoder) value(depth int) error {
	t.skipWS()
	if t.pos >= len(t.src) {
		return t.errorf("unexpected end")
	}
	switch c := t.src[t.pos]; {
	case c == '{':
		return t.object(depth + 1)
	case c == '[':
		return t.array(depth + 1)
	case c == '"':
		s, err := t.str()
		if err != nil {
			return err
		}
		t.out = append(appendStrHeader(t.out, len(s)), s...)
		return nil
	case c == 't':
		return t.literal("true", 0xc3)
	case c == 'f':
		return t.literal("false", 0xc2)
	case c == 'n':
		return t.literal("null", 0xc0)
	case c == '-' || (c >= '0' && c <= '9'):
		return t.number()
	default:
		return t.errorf("unexpected %q", c)
	}
}

func (t *transcoder) literal(word string, code byte) error {
	if len(t.src)-t.pos < len(word) || string(t.src[t.pos:t.pos+len(word)]) != word {
		return t.errorf("expected %s", word)
	}
	t.pos += len(word)
	t.out = append(t.out, code)
	return nil
}

// object reads {…}. The map header's size is known only at the end, so a
// fixmap byte is reserved and widened afterwards when there are 16 or more
// members.
func (t *transcoder) object(depth int) error {
	if depth > maxJSONDepth {
		return t.errorf("nested too deeply")
	}
	t.pos++ // {
	head := len(t.out)
	t.out = append(t.out, 0x80)
	n := 0
	t.skipWS()
	if t.pos < len(t.src) && t.src[t.pos] == '}' {
		t.pos++
		return nil
	}
	for {
		t.skipWS()
		if t.pos >= len(t.src) || t.src[t.pos] != '"' {
			return t.errorf("expected a string key")
		}
		key, err := t.str()
		if err != nil {
			return err
		}
		isTime := depth == 1 && string(key) == "time"
		t.out = append(appendStrHeader(t.out, len(key)), key...)
		t.skipWS()
		if t.pos >= len(t.src) || t.src[t.pos] != ':' {
			return t.errorf("expected ':'")
		}
		t.pos++
		start := len(t.out)
		if err := t.value(depth); err != nil {
			return err
		}
		if isTime {
			t.noteTime(t.out[start:])
		}
		n++
		t.skipWS()
		if t.pos >= len(t.src) {
			return t.errorf("unexpected end in an object")
		}
		switch t.src[t.pos] {
		case ',':
			t.pos++
		case '}':
			t.pos++
			t.patchHeader(head, n, 0x80, 0xde, 0xdf)
			return nil
		default:
			return t.errorf("expected ',' or '}'")
		}
	}
}

// noteTime keeps the top-level time value when it is a string: v is its
// MessagePack form just written.
func (t *transcoder) noteTime(v []byte) {
	t.hasTime = true
	s, ok := msgpackStr(v)
	t.timeIsStr = ok
	if ok {
		t.timeField = append(t.timeField[:0], s...)
	}
}

// msgpackStr returns the bytes of a MessagePack str, or false.
func msgpackStr(v []byte) ([]byte, bool) {
	if len(v) == 0 {
		return nil, false
	}
	switch c := v[0]; {
	case c&0xe0 == 0xa0:
		return v[1:], true
	case c == 0xd9:
		return v[2:], true
	case c == 0xda:
		return v[3:], true
	case c == 0xdb:
		return v[5:], true
	}
	return nil, false
}

func (t *transcoder) array(depth int) error {
	if depth > maxJSONDepth {
		return t.errorf("nested too deeply")
	}
	t.pos++ // [
	head := len(t.out)
	t.out = append(t.out, 0x90)
	n := 0
	t.skipWS()
	if t.pos < len(t.src) && t.src[t.pos] == ']' {
		t.pos++
		return nil
	}
	for {
		if err := t.value(depth); err != nil {
			return err
		}
		n++
		t.skipWS()
		if t.pos >= len(t.src) {
			return t.errorf("unexpected end in an array")
		}
		switch t.src[t.pos] {
		case ',':
			t.pos++
		case ']':
			t.pos++
			t.patchHeader(head, n, 0x90, 0xdc, 0xdd)
			return nil
		default:
			return t.errorf("expected ',' or ']'")
		}
	}
}

// patchHeader writes the count n into the one-byte header reserved at head,
// moving what follows when a 16- or 32-bit count is needed.
func (t *transcoder) patchHeader(head, n int, fix, c16, c32 byte) {
	if n < 16 {
		t.out[head] = fix | byte(n)
		return
	}
	extra, code := 2, c16
	if n > math.MaxUint16 {
		extra, code = 4, c32
	}
	end := len(t.out)
	t.out = append(t.out, make([]byte, extra)...)
	copy(t.out[head+1+extra:], t.out[head+1:end])
	t.out[head] = code
	if extra == 2 {
		binary.BigEndian.PutUint16(t.out[head+1:], uint16(n))
	} else {
		binary.BigEndian.PutUint32(t.out[head+1:], uint32(n))
	}
}

// str reads a JSON string and returns its text: a slice of the source when
// it has no escapes and is plain ASCII, else t.scratch.
func (t *transcoder) str() ([]byte, error) {
	t.pos++ // "
	start := t.pos
	for i := start; i < len(t.src); i++ {
		c := t.src[i]
		switch {
		case c == '"':
			t.pos = i + 1
			return t.src[start:i], nil
		case c == '\\' || c >= 0x80:
			return t.strSlow(start)
		case c < 0x20:
			t.pos = i
			return nil, t.errorf("control character in a string")
		}
	}
	t.pos = len(t.src)
	return nil, t.errorf("unterminated string")
}

func (t *transcoder) strSlow(start int) ([]byte, error) {
	b := t.scratch[:0]
	i := start
	for i < len(t.src) {
		c := t.src[i]
		switch {
		case c == '"':
			t.pos = i + 1
			t.scratch = b
			return b, nil
		case c < 0x20:
			t.pos = i
			return nil, t.errorf("control character in a string")
		case c == '\\':
			if i+1 >= len(t.src) {
				t.pos = i
				return nil, t.errorf("unterminated escape")
			}
			var err error
			b, i, err = t.escape(b, i)
			if err != nil {
				return nil, err
			}
		case c < 0x80:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(t.src[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, t.src[i:i+size]...)
			}
			i += size
		}
	}
	t.pos = len(t.src)
	return nil, t.errorf("unterminated string")
}

// escape decodes the escape at src[i] ('\\') into b.
func (t *transcoder) escape(b []byte, i int) ([]byte, int, error) {
	switch e := t.src[i+1]; e {
	case '"', '\\', '/':
		return append(b, e), i + 2, nil
	case 'b':
		return append(b, '\b'), i + 2, nil
	case 'f':
		return append(b, '\f'), i + 2, nil
	case 'n':
		return append(b, '\n'), i + 2, nil
	case 'r':
		return append(b, '\r'), i + 2, nil
	case 't':
		return append(b, '\t'), i + 2, nil
	case 'u':
		r, ok := hex4(t.src, i+2)
		if !ok {
			t.pos = i
			return nil, 0, t.errorf("bad \\u escape")
		}
		i += 6
		if utf16IsSurrogate(r) {
			if r2, ok := lowSurrogate(t.src, i); ok && r < 0xdc00 {
				return utf8.AppendRune(b, 0x10000+(r-0xd800)<<10+(r2-0xdc00)), i + 6, nil
			}
			return utf8.AppendRune(b, utf8.RuneError), i, nil
		}
		return utf8.AppendRune(b, r), i, nil
	default:
		t.pos = i
		return nil, 0, t.errorf("bad escape \\%c", e)
	}
}

func utf16IsSurrogate(r rune) bool { return r >= 0xd800 && r < 0xe000 }

// lowSurrogate reads a "\uDC00"–"\uDFFF" escape at src[i].
func lowSurrogate(src []byte, i int) (rune, bool) {
	if len(src)-i < 6 || src[i] != '\\' || src[i+1] != 'u' {
		return 0, false
	}
	r, ok := hex4(src, i+2)
	return r, ok && r >= 0xdc00 && r < 0xe000
}

func hex4(src []byte, i int) (rune, bool) {
	if len(src)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range src[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a JSON number: an integer when it has no fraction or
// exponent and fits 64 bits, else a float 64.
func (t *transcoder) number() error {
	start := t.pos
	i := t.pos
	if t.src[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(t.src) && t.src[i] >= '0' && t.src[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(t.src) && t.src[i] == '0' {
		i++
	} else if digits() == 0 {
		t.pos = i
		return t.errorf("bad number")
	}
	integer := true
	if i < len(t.src) && t.src[i] == '.' {
		i++
		integer = false
		if digits() == 0 {
			t.pos = i
			return t.errorf("bad number")
		}
	}
	if i < len(t.src) && (t.src[i] == 'e' || t.src[i] == 'E') {
		i++
		integer = false
		if i < len(t.src) && (t.src[i] == '+' || t.src[i] == '-') {
			i++
		}
		if digits() == 0 {
			t.pos = i
			return t.errorf("bad number")
		}
	}
	t.pos = i
	if integer && i-start <= 18 {
		// Fits int64 for sure: no allocation for the common case.
		var v int64
		neg := t.src[start] == '-'
		for _, c := range t.src[start:i] {
			if c != '-' {
				v = v*10 + int64(c-'0')
			}
		}
		if neg {
			v = -v
		}
		t.out = appendInt(t.out, v)
		return nil
	}
	text := string(t.src[start:i])
	if integer {
		if v, err := strconv.ParseInt(text, 10, 64); err == nil {
			t.out = appendInt(t.out, v)
			return nil
		}
		if v, err := strconv.ParseUint(text, 10, 64); err == nil {
			t.out = appendUint(t.out, v)
			return nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return t.errorf("number %s out of range", text)
	}
	t.out = appendFloat(t.out, f)
	return nil
}
