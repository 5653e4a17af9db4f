package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors returned by the client. Each wraps the underlying cause with %w.
var (
	// ErrInvalid: the request was malformed (wrong key or namespace length,
	// no keys, a block the node refused as inconsistent). Not retried.
	ErrInvalid = errors.New("kvcache: invalid request")
	// ErrCorrupt: a block failed its checksum, on the node (DataLoss) or
	// when the client verified it after fetching.
	ErrCorrupt = errors.New("kvcache: corrupt block")
	// ErrFull: the node has no room (store full, or block over its limit).
	ErrFull = errors.New("kvcache: no space")
	// ErrUnavailable: no owner of the key could be reached in time.
	ErrUnavailable = errors.New("kvcache: unavailable")
	// ErrUnauthenticated: the node did not accept the client's credentials
	// (no token, an unknown or revoked token, no client certificate where
	// one is required): gRPC Unauthenticated. Not retried, and the node is
	// not counted as failing: fix Config.Token or the certificate.
	ErrUnauthenticated = errors.New("kvcache: unauthenticated")
	// ErrPermissionDenied: the credentials are valid but their role may not
	// make this call (a read token storing blocks, a tenant token asking
	// for node-wide stats): gRPC PermissionDenied. Not retried.
	ErrPermissionDenied = errors.New("kvcache: permission denied")
	// ErrNoNodes: the configuration names no nodes.
	ErrNoNodes = errors.New("kvcache: no cache nodes configured")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("kvcache: client closed")
)

// fromCode maps a gRPC code to the client's sentinel. It is the only place
// that does so.
func fromCode(c codes.Code) error {
	switch c {
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition:
		return ErrInvalid
	case codes.DataLoss:
		return ErrCorrupt
	case codes.ResourceExhausted:
		return ErrFull
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	case codes.Unauthenticated:
		return ErrUnauthenticated
	case codes.PermissionDenied:
		return ErrPermissionDenied
	}
	return ErrUnavailable
}

// wrapRPC turns an error from a gRPC call into one that matches a sentinel
// with errors.Is while keeping the node's message.
func wrapRPC(node string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("node %s: %w", node, err)
	}
	s, _ := status.FromError(err)
	sent := fromCode(s.Code())
	// The node's message often opens with the code's own words
	// ("unauthenticated: unknown or revoked token"): say them once.
	msg := strings.TrimPrefix(s.Message(), strings.TrimPrefix(sent.Error(), "kvcache: ")+": ")
	return fmt.Errorf("node %s: %w: %s", node, sent, msg)
}

// retryable reports whether a failed idempotent call may succeed on another
// attempt or another replica.
func retryable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// RejectedError is a block the node refused, with the node's code and reason.
type RejectedError struct {
	Node   string
	Code   codes.Code
	Reason string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("node %s rejected block: %s: %s", e.Node, e.Code, e.Reason)
}

// Unwrap lets errors.Is match the sentinel of the node's code.
func (e *RejectedError) Unwrap() error { return fromCode(e.Code) }
