package client_test

import (
	"io"
	"log/slog"
	"os"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func tempDir() (string, error) { return os.MkdirTemp("", "kvcache-example-") }
