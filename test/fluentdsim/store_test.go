package fluentdsim

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"
)

// TestTagStoreMatchesMapModel checks the compact store against the plain
// map of id → count it replaces, on random ids with duplicates and empty
// ids, with a real hash and with hashes that make every id (or many ids)
// collide, so the by-text path is exercised too.
func TestTagStoreMatchesMapModel(t *testing.T) {
	hashes := map[string]func(string) uint64{
		"maphash":           newIDHash(),
		"all collide":       func(string) uint64 { return 7 },
		"length collisions": func(id string) uint64 { return uint64(len(id)) },
	}
	for name, hash := range hashes {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			ts := newTagStore(hash)
			want := map[string]int{}
			var order []string
			for i := range 3000 {
				id := ""
				if rng.IntN(10) > 0 {
					id = fmt.Sprintf("id-%d", rng.IntN(1500))
				}
				wantDup := id != "" && want[id] > 0
				if id != "" {
					want[id]++
				}
				if got := ts.add(int64(i), id, len(id)+2); got != wantDup {
					t.Fatalf("record %d (id %q): duplicate=%v, want %v", i, id, got, wantDup)
				}
				order = append(order, id)
			}
			st := &store{tags: map[string]*tagStore{"t": ts}}
			if got := st.ids("t"); !maps.Equal(got, want) {
				t.Errorf("ids differ from the model: %d ids, want %d", len(got), len(want))
			}
			recs := st.records("t")
			if len(recs) != len(order) {
				t.Fatalf("%d records, want %d", len(recs), len(order))
			}
			for i, r := range recs {
				if r.ID != order[i] || r.Time != time.Unix(int64(i), 0).UTC() || r.Size != len(order[i])+2 {
					t.Fatalf("record %d = %+v, want id %q", i, r, order[i])
				}
			}
		})
	}
}

// TestStoreDuplicatesPerTag checks the duplicate counts in Stats: an id
// counts again only under the same tag.
func TestStoreDuplicatesPerTag(t *testing.T) {
	st, err := newStore(false, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	recs := func(ids ...string) []parsed {
		var out []parsed
		for _, id := range ids {
			out = append(out, parsed{id: id, time: now, size: 10})
		}
		return out
	}
	for _, add := range []struct {
		tag string
		ids []string
	}{{"a", []string{"1", "2", ""}}, {"a", []string{"2", "", "3"}}, {"b", []string{"1", "1"}}} {
		if err := st.add(add.tag, recs(add.ids...)); err != nil {
			t.Fatal(err)
		}
	}
	var s Stats
	st.fill(&s)
	if s.StoredTotal != 8 || s.DuplicatesTotal != 2 || s.Duplicates["a"] != 1 || s.Duplicates["b"] != 1 {
		t.Errorf("stored=%d duplicates=%v total=%d, want 8, a=1 b=1, 2", s.StoredTotal, s.Duplicates, s.DuplicatesTotal)
	}
	if got := st.ids(""); !maps.Equal(got, map[string]int{"1": 3, "2": 2, "3": 1}) {
		t.Errorf("ids = %v", got)
	}
}
