package store

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

// On-disk layout (format 1), chosen from measurements (see bench_test.go):
//
//	"blocks"  ns||key (64 B) -> nested bucket { "v" -> encoded block }
//	"meta"    ns||key (64 B) -> metaRecord (50 B, + the tenant label)
//	"info"    "format" -> 1
//
// Each block lives in its own nested bucket because bbolt rewrites whole
// leaf pages on every commit and a leaf holds at least two keys: with all
// blocks as values of one bucket, each insert rewrites a neighbouring
// multi-megabyte value too (4-8x write amplification, ~130 MB/s). In its own
// bucket a block has its own root page and overflow pages, written once; the
// parent "blocks" bucket only holds 80-byte bucket headers, cheap to rewrite.
//
// Metadata sits in a separate, dense bucket so Open rebuilds the in-memory
// index by scanning ~50 bytes per block rather than touching every block's
// pages, and so the lazy flush of access times rewrites small leaves only.
var (
	bucketBlocks = []byte("blocks")
	bucketMeta   = []byte("meta")
	bucketInfo   = []byte("info")
	keyFormat    = []byte("format")
	keyValue     = []byte("v")
)

const formatVersion = 1

// metaRecord: version(1) flags(1) size(8) access(8) parent(32), little-endian;
// version 2 appends tenantLen(1) tenant(tenantLen). A block without a
// tenant label is written as version 1, so files without tenants stay
// readable by older nodes.
const (
	metaLen       = 50
	metaVersion   = 1
	metaVersion2  = 2
	flagHasParent = 1
)

func encodeMeta(e *entry) []byte {
	name := e.tenant.name
	b := make([]byte, metaLen, metaLen+1+len(name))
	b[0] = metaVersion
	if name != "" {
		b[0] = metaVersion2
		b = append(b, byte(len(name)))
		b = append(b, name...)
	}
	if e.hasParent {
		b[1] = flagHasParent
	}
	binary.LittleEndian.PutUint64(b[2:], uint64(e.size))
	binary.LittleEndian.PutUint64(b[10:], uint64(e.access))
	copy(b[18:], e.parent[32:]) // same namespace as the block: store the key only
	return b
}

// decodeMeta decodes a metadata record and returns the entry (without its
// tenant set) and its tenant label.
func decodeMeta(id []byte, b []byte) (*entry, string, error) {
	var name string
	ok := len(id) == len(blockID{}) && len(b) >= metaLen
	switch {
	case ok && b[0] == metaVersion:
		ok = len(b) == metaLen
	case ok && b[0] == metaVersion2:
		ok = len(b) > metaLen && len(b) == metaLen+1+int(b[metaLen])
		if ok {
			name = string(b[metaLen+1:])
		}
	default:
		ok = false
	}
	if !ok {
		return nil, "", fmt.Errorf("store: corrupt metadata record for %x", id)
	}
	e := &entry{
		hasParent: b[1]&flagHasParent != 0,
		size:      int64(binary.LittleEndian.Uint64(b[2:])),
		access:    int64(binary.LittleEndian.Uint64(b[10:])),
	}
	copy(e.id[:], id)
	e.flushed = e.access
	if e.hasParent {
		copy(e.parent[:32], id[:32])
		copy(e.parent[32:], b[18:metaLen])
		// A block naming itself as parent (accepted by versions before
		// ErrInvalidParent) would never be a leaf: drop the link.
		e.hasParent = e.parent != e.id
	}
	return e, name, nil
}

// initLayout creates the buckets of a new file and checks the format of an
// existing one.
func initLayout(tx *bbolt.Tx) error {
	info, err := tx.CreateBucketIfNotExists(bucketInfo)
	if err != nil {
		return err
	}
	switch v := info.Get(keyFormat); {
	case v == nil:
		if err := info.Put(keyFormat, []byte{formatVersion}); err != nil {
			return err
		}
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("store: unsupported file format %x", v)
	}
	for _, name := range [][]byte{bucketBlocks, bucketMeta} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// loadShard adds the blocks of one shard's metadata bucket to x. A block
// already in x (from another shard: possible after a crash, see Open) is
// not added; its id is returned so its copy here can be removed. Call
// x.breakCycles once every shard is loaded.
func loadShard(x *index, tx *bbolt.Tx, shard uint8) (dups []blockID, err error) {
	err = tx.Bucket(bucketMeta).ForEach(func(k, v []byte) error {
		e, name, err := decodeMeta(k, v)
		if err != nil {
			return err
		}
		if x.entries[e.id] != nil {
			dups = append(dups, e.id)
			return nil
		}
		e.shard = shard
		e.tenant = x.tenantOf(name)
		x.add(e)
		return nil
	})
	return dups, err
}
