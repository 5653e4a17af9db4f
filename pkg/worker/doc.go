// Package worker is the stateless inference worker's request path and its
// OpenAI-compatible HTTP API.
//
// For every request the worker tokenizes the prompt, hashes its full blocks
// into chained keys (pkg/prefix), asks the cache cluster for the longest
// cached prefix, fetches and decodes those blocks into the engine's paged KV,
// prefills only the rest, decodes, and then appends the newly completed
// blocks in the background. The cache is an optimisation only: a cache that
// is down, slow or serves a corrupt block costs a recompute, never a failed
// request, because every cache call has a deadline and every fetched block
// is verified before it is imported.
//
// # What is reused
//
// Every full block of the prompt is fetched. The engine must compute the
// prompt's last token to produce the logits of the first generated token,
// so on a full hit (the prompt ends on a block boundary and every block is
// cached) the last token's imported KV is dropped and that one token is
// prefilled. The last, partial block of a sequence is never stored.
//
// # What is appended
//
// After a request, every full block of the sequence that was computed here
// (not fetched) is appended: the prompt's blocks and, unless
// Config.PromptOnly is set, the blocks completed during generation. The
// latter makes multi-turn chat hit: the next turn's prompt repeats the
// previous answer token for token. KV depends only on tokens, never on how
// they were sampled, so these blocks are as valid as prompt blocks.
//
// # Concurrency
//
// The engine spreads one forward pass over every core, so running two
// passes at once only makes both slower and thrashes the caches. A
// semaphore (Config.MaxConcurrent, default 1) serialises forward passes.
// It is taken per prefill chunk and per decoded token, not per request, so
// a short request (or a cache hit with a short suffix) slots in between the
// chunks of a long prefill instead of waiting for it to finish. Cache
// lookups and fetches run outside the semaphore.
package worker
