package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

// errInvalid is the adapter's own sentinel for malformed requests that never
// reach the store (missing keys, bad chunk framing).
var errInvalid = errors.New("invalid request")

// errBusy is the adapter's sentinel for a node limit that a retry may pass
// once other calls finish (the Put assembly budget): ResourceExhausted.
var errBusy = errors.New("node busy")

// codeOf maps an error from the store, the codecs or the adapter to its gRPC
// code. It is the only place that does so: handlers return wrapped errors and
// toStatus turns them into statuses at the boundary, so a client sees
// InvalidArgument, DataLoss or ResourceExhausted, never Unknown.
func codeOf(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, kvblock.ErrChecksum):
		return codes.DataLoss
	case errors.Is(err, errInvalid),
		errors.Is(err, prefix.ErrLength),
		errors.Is(err, kvblock.ErrInvalid),
		errors.Is(err, kvblock.ErrUnsupported),
		errors.Is(err, store.ErrInvalidKey),
		errors.Is(err, store.ErrInvalidParent):
		return codes.InvalidArgument
	case errors.Is(err, errBusy), errors.Is(err, store.ErrTooLarge), errors.Is(err, store.ErrFull),
		errors.Is(err, store.ErrQuota), errors.Is(err, store.ErrNoSpace):
		return codes.ResourceExhausted
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, store.ErrClosed):
		return codes.Unavailable
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Internal
}

// toStatus converts err into a gRPC status error, keeping its message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}
