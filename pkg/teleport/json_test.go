package teleport

import (
	"encoding/json"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestAppendStructMatchesProtojson(t *testing.T) {
	cases := []map[string]any{
		{"event": "user.login", "code": "T1000I", "ei": 0, "success": true, "time": "2026-11-25T10:00:00.123Z"},
		{"quote\"key": "tab\there \\ back", "ctl": "\x01\x1f\u2028<&>", "utf8": "héllo ✓ 🎉", "nil": nil},
		{"nums": []any{1, -2.5, 1e21, 1e-7, 123456789012345, 0.1, 3e-300}, "nested": map[string]any{"b": []any{}, "a": map[string]any{}}},
		{"big": 9007199254740993.0, "neg0": -0.0, "list": []any{"x", nil, false, []any{1}}},
	}
	for i, c := range cases {
		s, err := structpb.NewStruct(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := protojson.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got := appendStruct(nil, s)
		var a, b any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("case %d: invalid JSON %s: %v", i, got, err)
		}
		_ = json.Unmarshal(want, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func TestAppendStringReplacesInvalidUTF8(t *testing.T) {
	got := string(appendString(nil, "a\xffb"))
	if got != "\"a\ufffdb\"" {
		t.Errorf("got %q", got)
	}
}

func BenchmarkEncode(b *testing.B) {
	s, err := structpb.NewStruct(map[string]any{"event": "user.login", "code": "T1000I", "ei": 0, "success": true,
		"time": "2026-11-25T10:00:00.123Z", "uid": "0b2c7d8e-1111-2222-3333-444455556666", "user": "alice",
		"cluster_name": "sim.teleport.example", "addr.remote": "10.1.2.3:4567", "method": "local"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("protojson", func(b *testing.B) {
		for b.Loop() {
			_, _ = protojson.Marshal(s)
		}
	})
	b.Run("append", func(b *testing.B) {
		for b.Loop() {
			_ = appendStruct(nil, s)
		}
	})
}
