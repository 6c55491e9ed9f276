package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// trimMargin is kept free below the size limit for the headers' framing.
const trimMargin = 256

// msgSize is the size JetStream checks against the stream's limit: headers
// plus body.
func msgSize(e bus.Event) int {
	m := bus.NewMsg(e)
	n := len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n + 12
}

// fit returns e unchanged when it fits in limit bytes; otherwise a copy
// whose largest string fields are shortened until it fits, with Trimmed
// set. An event with no strings to shorten keeps only its small scalar
// fields, so one oversized event never stalls the export.
func fit(e bus.Event, limit int) (bus.Event, error) {
	// Headers are a few hundred bytes; only a body near the limit needs
	// the exact size.
	if limit <= 0 || len(e.JSON)+4096 <= limit || msgSize(e) <= limit {
		return e, nil
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(e.JSON))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return e, fmt.Errorf("trim event %q: decode: %w", e.ID, err)
	}
	headers := msgSize(bus.Event{ID: e.ID, Type: e.Type, Time: e.Time, SessionID: e.SessionID, Index: e.Index, Session: e.Session, Trimmed: true})
	budget := limit - headers - trimMargin
	if budget < 64 {
		return e, fmt.Errorf("trim event %q: message size limit %d leaves no room for the body", e.ID, limit)
	}
	out := e
	out.Trimmed = true
	if e.ID == "" {
		out.ID = e.MsgID() // keep the dedup key of the untrimmed event
	}
	for range 64 {
		body, err := json.Marshal(doc)
		if err != nil {
			return e, fmt.Errorf("trim event %q: encode: %w", e.ID, err)
		}
		excess := len(body) - budget
		if excess <= 0 {
			out.JSON = body
			return out, nil
		}
		if !shortenLargest(doc, excess) {
			doc = scalarsOnly(doc)
		}
	}
	return e, fmt.Errorf("trim event %q: could not fit it in %d bytes", e.ID, limit)
}

// trimNote marks where a field was cut.
const trimNote = "…[trimmed]"

// shortenLargest cuts the longest string value in doc by excess bytes (or
// to the note alone) and reports whether there was one worth cutting.
func shortenLargest(doc any, excess int) bool {
	type leaf struct {
		set func(string)
		val string
	}
	var leaves []leaf
	var walk func(v any, set func(any))
	walk = func(v any, set func(any)) {
		switch t := v.(type) {
		case map[string]any:
			for k, c := range t {
				walk(c, func(n any) { t[k] = n })
			}
		case []any:
			for i, c := range t {
				walk(c, func(n any) { t[i] = n })
			}
		case string:
			leaves = append(leaves, leaf{set: func(s string) { set(s) }, val: t})
		}
	}
	walk(doc, func(any) {})
	sort.Slice(leaves, func(i, j int) bool { return len(leaves[i].val) > len(leaves[j].val) })
	if len(leaves) == 0 || len(leaves[0].val) <= len(trimNote)+16 {
		return false
	}
	top := leaves[0]
	keep := len(top.val) - excess - len(trimNote) - 16
	if keep < 0 {
		keep = 0
	}
	// Cut on a rune boundary so the JSON stays valid UTF-8.
	for keep > 0 && keep < len(top.val) && top.val[keep]&0xC0 == 0x80 {
		keep--
	}
	top.set(top.val[:keep] + trimNote)
	return true
}

// scalarsOnly keeps the top-level fields of an object that are short
// scalars: the last resort for events whose bulk is not in strings.
func scalarsOnly(doc any) any {
	m, ok := doc.(map[string]any)
	if !ok {
		return map[string]any{"trimmed": "event too large"}
	}
	out := map[string]any{}
	for k, v := range m {
		switch t := v.(type) {
		case string:
			if len(t) <= 256 {
				out[k] = t
			}
		case json.Number, bool, nil:
			out[k] = t
		}
	}
	return out
}
