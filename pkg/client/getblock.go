package client

import (
	"context"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// GetBlock fetches the one block stored under key, wherever it sits in its
// chain: its checksum and header are verified, but not its parent (which
// the caller need not know; FetchRaw instead takes keys[0] to start a
// chain, so it finds only first blocks). found is false when no owner has
// it. For tools (kvctl get); an engine restoring a prefix uses FetchRaw.
func (c *Client) GetBlock(ctx context.Context, ns prefix.Namespace, key prefix.Key) (block []byte, found bool, err error) {
	got, _, err := c.fetchBlocks(ctx, ns, false, nil, []prefix.Key{key}, nil, nil)
	if err != nil || len(got) == 0 {
		return nil, false, err
	}
	return got[0], true, nil
}
