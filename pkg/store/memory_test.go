package store_test

import (
	"testing"

	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, opts *store.Options) store.Store {
		m := store.NewMemory(opts)
		t.Cleanup(func() { m.Close() })
		return m
	})
}
