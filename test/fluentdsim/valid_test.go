package fluentdsim

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// validCases are inputs at the edges of the grammar.
var validCases = []string{
	``, ` `, `{}`, `[]`, ` { } `, `{"a":1}`, `{"a":1,}`, `{,"a":1}`, `{"a" 1}`, `{"a":}`, `{a:1}`, `{'a':1}`,
	`[1,2]`, `[1,]`, `[,1]`, `[1 2]`, `[`, `]`, `{`, `}`, `[[[]]]`, `[[[]]`, `{"a":{"b":[{"c":null}]}}`,
	`"x"`, `"`, `"\"`, `"\\"`, `"\/\b\f\n\r\t"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00e"`, `"\u"`, `"\x"`,
	"\"a\tb\"", "\"a\nb\"", "\"\x1f\"", "\"\x7f\"", "\"\xff\xfe\"", `"é"`,
	`0`, `-0`, `01`, `-01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-`, `--1`, `+1`, `1.5e3.2`, `123456789012345678901234567890`,
	`true`, `false`, `null`, `tru`, `truex`, `nul`, `[true,false,null]`, `[truefalse]`, `True`, `NaN`, `Infinity`,
	"\t\n\r {} \r\n\t", "\v{}", "{}\x00", `{} {}`, `{}x`, `[1]]`, `{"a":1}}`,
	`{"a":"b","c":[1,{"d":"}]\"[{"}],"e":-1.5e-3}`,
}

// TestValidJSONMatchesStdlib holds validJSON to json.Valid's answers on
// edge cases, on deep nesting around the depth limit, and on many random
// mutations of valid documents.
func TestValidJSONMatchesStdlib(t *testing.T) {
	check := func(s string) {
		t.Helper()
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", s, got, want)
		}
	}
	for _, s := range validCases {
		check(s)
	}
	for _, depth := range []int{9999, 10000, 10001} {
		check(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		check(strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	seeds := append([]string{string(benchBody(3, 0))}, validCases...)
	alphabet := []byte("{}[]\",:\\ -+.eE0159tfnulrasu\t\n\x01\xff")
	for range 200_000 {
		b := []byte(seeds[rng.IntN(len(seeds))])
		for range 1 + rng.IntN(3) {
			switch op := rng.IntN(3); {
			case op == 0 && len(b) > 0: // replace a byte
				b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
			case op == 1: // insert a byte
				i := rng.IntN(len(b) + 1)
				b = append(b[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[i:]...)...)
			case len(b) > 0: // delete a byte
				i := rng.IntN(len(b))
				b = append(b[:i], b[i+1:]...)
			}
		}
		check(string(b))
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range validCases {
		f.Add([]byte(s))
	}
	f.Add(benchBody(2, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}
