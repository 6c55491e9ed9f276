package fluentdsim

import "bytes"

// The hot path reads records without building maps: the body is checked
// once with json.Valid, then scanned for the top-level fields of each
// object. The scanner trusts that its input is valid JSON.

// field is one top-level member of an object: the key with its quotes, and
// the value as it appears in the body.
type field struct{ key, val []byte }

// is reports whether the field's key is name.
func (f field) is(name string) bool { return string(f.name()) == name }

// name is the key without its quotes: a slice of the body, or the decoded
// text when the key holds escapes (nil if those are invalid).
func (f field) name() []byte {
	k := f.key[1 : len(f.key)-1]
	if bytes.IndexByte(k, '\\') < 0 {
		return k
	}
	s, ok := rawString(f.key)
	if !ok {
		return nil
	}
	return []byte(s)
}

// scanObject appends the members of the object at b[i] to fields and
// returns them with the index just past the object.
func scanObject(b []byte, i int, fields []field) ([]field, int) {
	i = skipWS(b, i+1) // past '{'
	if b[i] == '}' {
		return fields, i + 1
	}
	for {
		ks := i
		i = skipString(b, i)
		key := b[ks:i]
		i = skipWS(b, i)
		i = skipWS(b, i+1) // past ':'
		vs := i
		i = skipValue(b, i)
		fields = append(fields, field{key: key, val: b[vs:i]})
		i = skipWS(b, i)
		if b[i] == '}' {
			return fields, i + 1
		}
		i = skipWS(b, i+1) // past ','
	}
}

// skipValue returns the index just past the value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// compactRecord writes the object's members, without `time` when
// dropTime (in_http's <parse> takes it out of the record unless
// keep_time_key true), as an object without whitespace between members,
// keeping their order.
func compactRecord(fields []field, dropTime bool) []byte {
	n := 2
	for _, f := range fields {
		n += len(f.key) + len(f.val) + 2
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	first := true
	for _, f := range fields {
		if dropTime && f.is("time") {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, f.key...)
		out = append(out, ':')
		out = append(out, f.val...)
	}
	return append(out, '}')
}
