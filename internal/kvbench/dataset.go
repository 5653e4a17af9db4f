package kvbench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// dataset is a set of distinct encoded blocks, how they are appended and
// what a fetch asks for.
type dataset struct {
	name    string
	g       Geometry
	ns      prefix.Namespace
	blocks  []Block
	data    [][]byte // encoded blocks; dropped after populate
	appends [][]int  // block indexes of one Put, in stream order
	lookup  bool     // a writer looks up first and appends only the missing suffix
	fetches [][]prefix.Key
}

func (d *dataset) bytes() int64 {
	var n int64
	for _, b := range d.data {
		n += int64(len(b))
	}
	return n
}

// uniformDataset is uniform chains of blocks near blockBytes, about
// total bytes in all (the target dataset, and each of BlockSizes).
func (r *runner) uniformDataset(name string, blockBytes int, total int64) (*dataset, error) {
	g := Llama3_8B()
	g.Model += "/kvbench-" + name
	best := 1
	for t := 1; t <= kvblock.MaxTokens; t *= 2 {
		g.BlockTokens = t
		if g.BlockBytes() > blockBytes*9/8 {
			break
		}
		best = t
	}
	g.BlockTokens = best
	if err := g.Check(); err != nil {
		return nil, err
	}
	ns, err := g.Namespace()
	if err != nil {
		return nil, err
	}
	per := r.cfg.TargetChainLen
	chains := max(1, int(total/int64(g.BlockBytes()*per)))
	d := &dataset{name: name, g: g, ns: ns}
	tokens := make([]uint32, g.BlockTokens)
	for c := range chains {
		parent, has := ns.Root(), false
		var idx []int
		var keys []prefix.Key
		for j := range per {
			fillTokens(tokens, 7, uint64(c)<<20, j)
			k := prefix.Next(parent, tokens)
			b := Block{Key: k, HasParent: has, Pos: uint32(j * g.BlockTokens), Seed: uint64(c)<<32 | uint64(j)*2654435761}
			if has {
				b.Parent = parent
			}
			idx = append(idx, len(d.blocks))
			keys = append(keys, k)
			d.blocks = append(d.blocks, b)
			parent, has = k, true
		}
		d.appends = append(d.appends, idx)
		d.fetches = append(d.fetches, keys)
	}
	return d, nil
}

// encode encodes every block of d on all cores.
func (r *runner) encode(ctx context.Context, d *dataset) error {
	enc := NewEncoder(d.g, 42)
	d.data = make([][]byte, len(d.blocks))
	r.p.begin(fmt.Sprintf("encode %s (%s)", d.name, d.g.Codec), int64(len(d.blocks)))
	defer r.p.end()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.GOMAXPROCS(0))
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(d.blocks) || ctx.Err() != nil {
					return
				}
				b, err := enc.Encode(nil, d.blocks[i])
				if err != nil {
					errs[w] = err
					return
				}
				d.data[i] = b
				r.p.add(1, int64(len(b)))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}
