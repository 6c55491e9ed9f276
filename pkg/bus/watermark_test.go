package bus

import "testing"

func TestWatermark(t *testing.T) {
	var w Watermark
	steps := []struct {
		ack  uint64
		mark uint64
	}{
		{2, 0}, {3, 0}, {1, 3}, {3, 3}, {5, 3}, {4, 5}, {1, 5}, {7, 5}, {6, 7},
	}
	for _, s := range steps {
		if got := w.Ack(s.ack); got != s.mark {
			t.Fatalf("Ack(%d) = %d, want %d", s.ack, got, s.mark)
		}
	}
	if w.Mark() != 7 || w.Gaps() != 0 {
		t.Fatalf("mark %d gaps %d", w.Mark(), w.Gaps())
	}
	w2 := NewWatermark(100)
	if w2.Ack(102) != 100 || w2.Gaps() != 1 || w2.Ack(101) != 102 {
		t.Fatalf("NewWatermark(100): mark %d", w2.Mark())
	}
}
