package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The sweep shows how TTFT grows with the shared prefix on a miss (the
// whole prompt is prefilled) and on a hit (the prefix is fetched).

// parseSweep parses the --sweep list of prefix lengths.
func parseSweep(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 16 || n > 1<<16 {
			return nil, fmt.Errorf("--sweep: %q is not a prefix length of 16..65536 tokens", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// sweepSteps sends each prompt twice in a row: runSteps alternates the
// workers, so the first is a miss on one worker and the second a hit on
// the other, fetching what the first appended.
func sweepSteps(lengths []int) []step {
	var steps []step
	for _, n := range lengths {
		msgs := []message{{Role: "user", Content: text(fmt.Sprintf("sweep-%d", n), n) + "\n\nWhat is this about?"}}
		g := fmt.Sprintf("p%d", n)
		steps = append(steps, step{Group: g, Label: "first", Messages: msgs}, step{Group: g, Label: "again", Messages: msgs})
	}
	return steps
}

// sweepPoint is one prefix length of the sweep.
type sweepPoint struct {
	PromptTokens, CachedTokens int
	MissTTFTMS, HitTTFTMS      float64
}

// sweepPoints pairs the rows of sweepSteps; a pair whose second request
// was not a hit (or whose first was one) is left out, not drawn as one.
func sweepPoints(rows []row) []sweepPoint {
	var pts []sweepPoint
	for i := 0; i+1 < len(rows); i += 2 {
		miss, hit := rows[i], rows[i+1]
		if miss.hit() || !hit.hit() {
			continue
		}
		pts = append(pts, sweepPoint{PromptTokens: miss.PromptTokens, CachedTokens: hit.CachedTokens,
			MissTTFTMS: miss.Timings.TTFTMS, HitTTFTMS: hit.Timings.TTFTMS})
	}
	return pts
}

func printSweep(w io.Writer, pts []sweepPoint) {
	fmt.Fprintf(w, "\n%13s %13s %13s %12s %8s\n", "prompt tokens", "cached (hit)", "miss TTFT ms", "hit TTFT ms", "speedup")
	for _, p := range pts {
		fmt.Fprintf(w, "%13d %13d %13.0f %12.0f %7.1fx\n", p.PromptTokens, p.CachedTokens, p.MissTTFTMS, p.HitTTFTMS, ratio(p.MissTTFTMS, p.HitTTFTMS))
	}
}
