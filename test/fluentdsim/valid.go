package fluentdsim

import "bytes"

// validJSON reports whether b is one JSON value with optional whitespace
// around it: exactly what json.Valid reports (strings are not checked for
// valid UTF-8, nesting is limited to 10,000 levels). It exists for speed:
// json.Valid's byte-at-a-time state machine was three quarters of the time
// spent parsing a request body, and this walks the bytes directly.
// TestValidJSONMatchesStdlib and FuzzValidJSON hold the two to the same
// answers.
func validJSON(b []byte) bool {
	v := validator{b: b}
	i, ok := v.value(v.ws(0), 0)
	return ok && v.ws(i) == len(b)
}

// maxNestingDepth is encoding/json's limit on nested objects and arrays.
const maxNestingDepth = 10000

// validator checks b. Each method takes the index where its element starts
// and returns the index just past it, and false at the first error.
type validator struct{ b []byte }

func (v *validator) value(i, depth int) (int, bool) {
	if i >= len(v.b) {
		return i, false
	}
	switch c := v.b[i]; {
	case c == '{':
		return v.object(i, depth+1)
	case c == '[':
		return v.array(i, depth+1)
	case c == '"':
		return v.string(i)
	case c == '-' || isDigit(c):
		return v.number(i)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	}
	return i, false
}

func (v *validator) object(i, depth int) (int, bool) {
	if depth > maxNestingDepth {
		return i, false
	}
	i = v.ws(i + 1)
	if i < len(v.b) && v.b[i] == '}' {
		return i + 1, true
	}
	var ok bool
	for {
		if i >= len(v.b) || v.b[i] != '"' {
			return i, false
		}
		if i, ok = v.string(i); !ok {
			return i, false
		}
		i = v.ws(i)
		if i >= len(v.b) || v.b[i] != ':' {
			return i, false
		}
		if i, ok = v.value(v.ws(i+1), depth); !ok {
			return i, false
		}
		i = v.ws(i)
		if i >= len(v.b) {
			return i, false
		}
		switch v.b[i] {
		case '}':
			return i + 1, true
		case ',':
			i = v.ws(i + 1)
		default:
			return i, false
		}
	}
}

func (v *validator) array(i, depth int) (int, bool) {
	if depth > maxNestingDepth {
		return i, false
	}
	i = v.ws(i + 1)
	if i < len(v.b) && v.b[i] == ']' {
		return i + 1, true
	}
	var ok bool
	for {
		if i, ok = v.value(i, depth); !ok {
			return i, false
		}
		i = v.ws(i)
		if i >= len(v.b) {
			return i, false
		}
		switch v.b[i] {
		case ']':
			return i + 1, true
		case ',':
			i = v.ws(i + 1)
		default:
			return i, false
		}
	}
}

// string checks the string at b[i] (its opening quote): no control
// characters, only JSON's escapes.
func (v *validator) string(i int) (int, bool) {
	for i++; i < len(v.b); i++ {
		switch c := v.b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			i++
			if i >= len(v.b) {
				return i, false
			}
			switch v.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(v.b) || !isHex(v.b[i+1]) || !isHex(v.b[i+2]) || !isHex(v.b[i+3]) || !isHex(v.b[i+4]) {
					return i, false
				}
				i += 4
			default:
				return i, false
			}
		}
	}
	return i, false
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func (v *validator) number(i int) (int, bool) {
	if v.b[i] == '-' {
		i++
	}
	switch {
	case i >= len(v.b):
		return i, false
	case v.b[i] == '0':
		i++
	case isDigit(v.b[i]):
		i = v.digits(i)
	default:
		return i, false
	}
	if i < len(v.b) && v.b[i] == '.' {
		i++
		if i >= len(v.b) || !isDigit(v.b[i]) {
			return i, false
		}
		i = v.digits(i)
	}
	if i < len(v.b) && (v.b[i] == 'e' || v.b[i] == 'E') {
		i++
		if i < len(v.b) && (v.b[i] == '+' || v.b[i] == '-') {
			i++
		}
		if i >= len(v.b) || !isDigit(v.b[i]) {
			return i, false
		}
		i = v.digits(i)
	}
	return i, true
}

func (v *validator) digits(i int) int {
	for i < len(v.b) && isDigit(v.b[i]) {
		i++
	}
	return i
}

func (v *validator) literal(i int, lit string) (int, bool) {
	if !bytes.HasPrefix(v.b[i:], []byte(lit)) {
		return i, false
	}
	return i + len(lit), true
}

func (v *validator) ws(i int) int { return skipWS(v.b, i) }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
