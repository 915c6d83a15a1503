package server

import "testing"

// TestBudgetFor: a device with a fixed KV pool (a GPU) caps the budget;
// where caches grow as needed (the CPU) the asked budget stands.
func TestBudgetFor(t *testing.T) {
	for _, c := range []struct{ asked, capacity, want int64 }{
		{0, 0, 0}, // CPU, no limit asked
		{1 << 30, 0, 1 << 30},
		{0, 8 << 30, 8 << 30}, // GPU, no limit asked: the pool
		{1 << 30, 8 << 30, 1 << 30},
		{16 << 30, 8 << 30, 8 << 30},
	} {
		if got := budgetFor(c.asked, c.capacity); got != c.want {
			t.Errorf("budgetFor(%d, %d) = %d, want %d", c.asked, c.capacity, got, c.want)
		}
	}
}
