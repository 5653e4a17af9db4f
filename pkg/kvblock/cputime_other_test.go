//go:build !unix

package kvblock

import "time"

func processCPU() time.Duration { return 0 }
