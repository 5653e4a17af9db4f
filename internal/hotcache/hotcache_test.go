package hotcache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// op is one step of a scripted sequence: put key with size, or get key
// (wantHit says whether it must be found).
type op struct {
	put     bool
	key     string
	size    int64
	wantHit bool
}

func put(k string, size int64) op { return op{put: true, key: k, size: size} }
func hit(k string) op             { return op{key: k, wantHit: true} }
func miss(k string) op            { return op{key: k} }

// keys lists the cache's keys from most to least recently used.
func keys[K comparable, V any](c *Cache[K, V]) []K {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []K
	for e := c.root.next; e != &c.root; e = e.next {
		out = append(out, e.key)
	}
	return out
}

// checkInvariants: bytes is the sum of the charges, within budget, and
// the list and the map hold the same entries.
func checkInvariants[K comparable, V any](t *testing.T, c *Cache[K, V]) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	n := 0
	for e := c.root.next; e != &c.root; e = e.next {
		if c.items[e.key] != e {
			t.Fatalf("list entry %v is not the map's", e.key)
		}
		sum += e.size
		n++
	}
	if n != len(c.items) || sum != c.bytes || c.bytes > c.budget {
		t.Fatalf("%d listed, %d mapped, %d charged, bytes %d, budget %d", n, len(c.items), sum, c.bytes, c.budget)
	}
}

func TestLRU(t *testing.T) {
	New[string, int](0, nil) // a zero budget is valid
	oh := New[string, int](1, nil).Overhead()
	unit := 1000 - oh // an entry of payload unit is charged exactly 1000
	tests := []struct {
		name      string
		budget    int64
		ops       []op
		wantOrder []string // most recent first, after ops
		evictions uint64
		refused   uint64
	}{
		{"fits", 3000, []op{put("a", unit), put("b", unit), put("c", unit), hit("a"), hit("b"), hit("c")},
			[]string{"c", "b", "a"}, 0, 0},
		{"evicts the least recent", 3000, []op{put("a", unit), put("b", unit), put("c", unit), put("d", unit), miss("a")},
			[]string{"d", "c", "b"}, 1, 0},
		{"get refreshes recency", 3000, []op{put("a", unit), put("b", unit), put("c", unit), hit("a"), put("d", unit), miss("b"), hit("a")},
			[]string{"a", "d", "c"}, 1, 0},
		{"a big entry evicts several", 3000, []op{put("a", unit), put("b", unit), put("c", unit), put("big", unit+1000)},
			[]string{"big", "c"}, 2, 0},
		{"larger than the budget is refused", 3000, []op{put("a", unit), put("huge", 3001), hit("a"), miss("huge")},
			[]string{"a"}, 0, 1},
		{"replacing restarts recency and recharges", 3000, []op{put("a", unit), put("b", unit), put("a", 2*unit+1000), miss("b"), hit("a")},
			[]string{"a"}, 1, 0},
		{"exactly the budget", 2000, []op{put("a", unit), put("b", unit), hit("a"), hit("b")},
			[]string{"b", "a"}, 0, 0},
		{"zero budget stores nothing", 0, []op{put("a", 0), miss("a")}, nil, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New[string, int](tt.budget, nil)
			var hits, misses uint64
			for i, o := range tt.ops {
				if o.put {
					c.Put(o.key, i, o.size)
				} else {
					_, ok := c.Get(o.key)
					if ok != o.wantHit {
						t.Fatalf("op %d: Get(%q) = %v, want %v", i, o.key, ok, o.wantHit)
					}
					if ok {
						hits++
					} else {
						misses++
					}
				}
				checkInvariants(t, c)
			}
			if got := keys(c); !slices.Equal(got, tt.wantOrder) {
				t.Errorf("order %v, want %v", got, tt.wantOrder)
			}
			s := c.Stats()
			if s.Evictions != tt.evictions || s.Refused != tt.refused || s.Hits != hits || s.Misses != misses {
				t.Errorf("stats %+v, want %d evictions, %d refused, %d hits, %d misses", s, tt.evictions, tt.refused, hits, misses)
			}
			if s.Entries != len(tt.wantOrder) || s.Bytes > tt.budget {
				t.Errorf("%d entries of %d bytes, want %d entries within %d", s.Entries, s.Bytes, len(tt.wantOrder), tt.budget)
			}
		})
	}
}

// The value put is the value got, and Put of the same key replaces it.
func TestValues(t *testing.T) {
	c := New[int, []float32](1<<20, nil)
	c.Put(1, []float32{1, 2}, 8)
	c.Put(2, []float32{3}, 4)
	c.Put(1, []float32{5}, 4)
	if v, ok := c.Get(1); !ok || !slices.Equal(v, []float32{5}) {
		t.Fatalf("Get(1) = %v, %v", v, ok)
	}
	if v, ok := c.Get(2); !ok || !slices.Equal(v, []float32{3}) {
		t.Fatalf("Get(2) = %v, %v", v, ok)
	}
	if s := c.Stats(); s.Entries != 2 || s.Bytes != 8+2*c.Overhead() {
		t.Fatalf("stats %+v", s)
	}
}

func TestDelete(t *testing.T) {
	type key struct {
		ns string
		i  int
	}
	c := New[key, int](1<<20, nil)
	for _, ns := range []string{"a", "b"} {
		for i := range 5 {
			c.Put(key{ns, i}, i, 10)
		}
	}
	if !c.Delete(key{"a", 0}) || c.Delete(key{"a", 0}) {
		t.Fatal("Delete reports wrong")
	}
	if n := c.DeleteFunc(func(k key) bool { return k.ns == "b" }); n != 5 {
		t.Fatalf("DeleteFunc dropped %d, want 5", n)
	}
	checkInvariants(t, c)
	if got := c.Stats(); got.Entries != 4 || got.Bytes != 4*(10+c.Overhead()) {
		t.Fatalf("stats %+v", got)
	}
	for i := range 5 {
		if _, ok := c.Get(key{"b", i}); ok {
			t.Fatalf("b/%d survived DeleteFunc", i)
		}
		if _, ok := c.Get(key{"a", i}); ok != (i > 0) {
			t.Fatalf("a/%d present = %v", i, ok)
		}
	}
}

// Entries older than the TTL are gone, reading does not extend them, and
// Contains agrees with Get.
func TestTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New[string, int](1<<20, &Options{TTL: time.Minute, Now: func() time.Time { return now }})
	c.Put("old", 1, 1)
	now = now.Add(40 * time.Second)
	c.Put("new", 2, 1)
	if _, ok := c.Get("old"); !ok {
		t.Fatal("old gone before its TTL")
	}
	now = now.Add(30 * time.Second) // old is 70 s old, new 30 s
	if c.Contains("old") {
		t.Fatal("Contains sees an expired entry")
	}
	if _, ok := c.Get("old"); ok {
		t.Fatal("old served past its TTL (a Get must not have extended it)")
	}
	if _, ok := c.Get("new"); !ok || !c.Contains("new") {
		t.Fatal("new gone before its TTL")
	}
	if s := c.Stats(); s.Expired != 1 || s.Entries != 1 {
		t.Fatalf("stats %+v", s)
	}
	checkInvariants(t, c)
}

// Many goroutines put, get and delete random keys of random sizes (run
// it with -race): the charged bytes never exceed the budget, at any
// moment a reader looks, and the structure stays consistent.
func TestConcurrent(t *testing.T) {
	const budget = 64 << 10
	c := New[int, []byte](budget, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var over error
	var overMu sync.Mutex
	wg.Add(1)
	go func() { // a watcher sampling the size while the others work
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s := c.Stats(); s.Bytes > budget || s.Bytes < 0 {
				overMu.Lock()
				over = fmt.Errorf("bytes %d, budget %d", s.Bytes, budget)
				overMu.Unlock()
			}
		}
	}()
	var workers sync.WaitGroup
	for g := range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 3000 {
				k := r.IntN(200)
				switch x := r.IntN(10); {
				case x < 5:
					size := r.IntN(4 << 10)
					c.Put(k, make([]byte, size), int64(size))
				case x < 9:
					if v, ok := c.Get(k); ok && len(v) > 4<<10 {
						t.Errorf("value of %d bytes", len(v))
					}
				default:
					c.Delete(k)
				}
			}
		}()
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	if over != nil {
		t.Fatal(over)
	}
	checkInvariants(t, c)
	if s := c.Stats(); s.Evictions == 0 || s.Hits == 0 {
		t.Fatalf("the workload did not exercise eviction and hits: %+v", s)
	}
}

func BenchmarkGetPut(b *testing.B) {
	c := New[int, []float32](1<<20, nil)
	v := make([]float32, 16)
	for i := range 1000 {
		c.Put(i, v, 64)
	}
	i := 0
	for b.Loop() {
		i++
		if _, ok := c.Get(i % 2000); !ok {
			c.Put(i%2000, v, 64)
		}
	}
}
