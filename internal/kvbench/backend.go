package kvbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// Backend is what the phases drive: a kvcache cluster or Redis.
type Backend interface {
	Name() string
	// Lookup returns how many keys, from the first, are stored.
	Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error)
	// Put stores blocks (durably, where the backend can).
	Put(ctx context.Context, ns prefix.Namespace, blocks []client.Block) error
	// Fetch reads the blocks of keys, reusing the buffers in *dst, and
	// returns how many blocks (from the first) and bytes it got.
	Fetch(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst *[][]byte) (blocks int, bytes int64, err error)
	Close() error
}

// kvcacheBackend drives a kvcache cluster through pkg/client.
type kvcacheBackend struct {
	c    *client.Client
	name string
}

// newKVCache returns a client of nodes; dataPlane false reads over gRPC
// streams only.
func newKVCache(nodes []string, dataPlane bool) (*kvcacheBackend, error) {
	mk := func() (*client.Client, error) {
		return client.New(client.Config{
			Nodes:       nodes,
			Replicas:    1,
			CallTimeout: 60 * time.Second,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}
	c, err := mk()
	if err != nil {
		return nil, err
	}
	c.UseDataPlane(dataPlane)
	name := "kvcache"
	if !dataPlane {
		name = "kvcache-grpc"
	}
	return &kvcacheBackend{c: c, name: name}, nil
}

func (b *kvcacheBackend) Name() string { return b.name }

func (b *kvcacheBackend) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	return b.c.Lookup(ctx, ns, keys)
}

func (b *kvcacheBackend) Put(ctx context.Context, ns prefix.Namespace, blocks []client.Block) error {
	return b.c.Put(ctx, ns, blocks)
}

func (b *kvcacheBackend) Fetch(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst *[][]byte) (int, int64, error) {
	got, err := b.c.FetchRaw(ctx, ns, keys, *dst)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	for _, g := range got {
		n += int64(len(g))
	}
	// Keep every buffer for the next call, including those beyond the prefix.
	if len(got) > len(*dst) {
		*dst = append((*dst)[:0], got...)
	} else {
		copy(*dst, got)
	}
	return len(got), n, nil
}

func (b *kvcacheBackend) Close() error { return b.c.Close() }

// RedisMode is how the Redis backend reads a request's blocks.
type RedisMode int

const (
	// RedisGET sends one GET per block, all of a request's GETs in one
	// pipeline (one round trip).
	RedisGET RedisMode = iota
	// RedisMGET sends one MGET of all of a request's blocks.
	RedisMGET
)

func (m RedisMode) String() string {
	if m == RedisMGET {
		return "redis MGET"
	}
	return "redis GET (pipelined)"
}

// redisBackend stores each encoded block as one Redis string under
// namespace || key, as an LMCache-style Redis connector does.
type redisBackend struct {
	rdb  *redis.Client
	mode RedisMode
}

func newRedis(addr string, poolSize int, mode RedisMode) *redisBackend {
	return &redisBackend{mode: mode, rdb: redis.NewClient(&redis.Options{
		Addr:         addr,
		PoolSize:     poolSize,
		ReadTimeout:  60 * time.Second,
		WriteTimeout: 60 * time.Second,
	})}
}

func (b *redisBackend) Name() string { return b.mode.String() }

func redisKey(ns prefix.Namespace, k prefix.Key) string {
	return string(ns[:]) + string(k[:])
}

// Lookup pipelines one EXISTS per key (a single multi-key EXISTS answers a
// count, not which keys, so it cannot give the prefix).
func (b *redisBackend) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	cmds := make([]*redis.IntCmd, len(keys))
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Exists(ctx, redisKey(ns, k))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for n < len(cmds) && cmds[n].Val() == 1 {
		n++
	}
	return n, nil
}

func (b *redisBackend) Put(ctx context.Context, ns prefix.Namespace, blocks []client.Block) error {
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, bl := range blocks {
			p.Set(ctx, redisKey(ns, bl.Key), bl.Data, 0)
		}
		return nil
	})
	return err
}

func (b *redisBackend) Fetch(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst *[][]byte) (int, int64, error) {
	var total int64
	n := 0
	switch b.mode {
	case RedisMGET:
		ks := make([]string, len(keys))
		for i, k := range keys {
			ks[i] = redisKey(ns, k)
		}
		vals, err := b.rdb.MGet(ctx, ks...).Result()
		if err != nil {
			return 0, 0, err
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				break
			}
			total += int64(len(s))
			n++
		}
	default:
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.Get(ctx, redisKey(ns, k))
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			return 0, 0, err
		}
		// Val, not Bytes: the value is used in place (Bytes would copy it),
		// the cheapest a Go user can do.
		for _, c := range cmds {
			v, err := c.Result()
			if err != nil {
				break
			}
			total += int64(len(v))
			n++
		}
	}
	return n, total, nil
}

func (b *redisBackend) Close() error { return b.rdb.Close() }

// flushRedis empties the Redis database so a run starts cold.
func flushRedis(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", addr, err)
	}
	return nil
}
