// Package docs holds no code: its tests check that the numbers the
// documents in this directory state are the numbers the project's
// commands print (kv-cache.md against `kvctl size`).
package docs
