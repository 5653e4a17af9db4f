package auth

import (
	"context"
	"time"
)

// Reloader is a file-backed credential: Tokens or TLSFiles.
type Reloader interface {
	Reload() (changed bool, err error)
}

// Watch reloads rs every interval until ctx ends, so an edited tokens file
// or a renewed certificate takes effect within one interval (a SIGHUP
// handler can call Reload for an immediate effect). onReload, if set, is
// called after every reload that changed something or failed.
func Watch(ctx context.Context, interval time.Duration, onReload func(r Reloader, err error), rs ...Reloader) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range rs {
			changed, err := r.Reload()
			if (changed || err != nil) && onReload != nil {
				onReload(r, err)
			}
		}
	}
}
