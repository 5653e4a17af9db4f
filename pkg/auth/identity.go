// Package auth says who a caller of a cache node is: the tenant its data
// is isolated in, the role that bounds what it may do, and its byte quota.
//
// Identities come from a tokens file (Tokens, reloaded while the node
// runs) or from a verified TLS client certificate; the gRPC server and the
// data plane ask a Verifier, which also enforces protected mode (loopback
// callers only when the node has no credentials configured). The package
// has no gRPC dependency; docs/security.md is the user-facing description.
package auth

import (
	"context"
	"errors"
	"fmt"
)

// Role bounds what an identity may do. Each role includes the ones below it.
type Role uint8

const (
	// RoleNone is the zero Role: nothing is allowed.
	RoleNone Role = iota
	// RoleRead may Lookup, Get and see its own Stats.
	RoleRead
	// RoleWrite may also Put.
	RoleWrite
	// RoleAdmin may also Delete and see the Stats of the whole node.
	RoleAdmin
)

// ParseRole parses "read", "write" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("auth: unknown role %q (want read, write or admin)", s)
}

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Allows reports whether r includes need.
func (r Role) Allows(need Role) bool { return r >= need }

// SharedTenant, written as a tenant in a tokens file, means no tenant: the
// caller's namespaces are used as sent (docs/keys.md). Such a caller can
// address any tenant's folded namespace, so the tokens file allows it for
// role admin only (operators: kvctl, drains).
const SharedTenant = "-"

// Identity is an authenticated caller.
type Identity struct {
	// Tenant is folded into every namespace the caller sends
	// (prefix.WithTenant); "" means none (the shared tenant).
	Tenant string
	Role   Role
	// Quota is the tenant's byte budget from the tokens file; 0 means none
	// given there.
	Quota int64
	// Source says how the caller was identified ("token", "cert:ID",
	// "loopback", "insecure"), for logs.
	Source string
}

// Sentinel errors of Verifier.Identify; callers map them to
// Unauthenticated and PermissionDenied respectively.
var (
	// ErrUnauthenticated: no credential, or one the node does not accept.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermission: the identity is known but may not do this, or the
	// node is in protected mode and the caller is not on loopback.
	ErrPermission = errors.New("permission denied")
)

// Require returns nil if id may act with role need, else an error
// wrapping ErrPermission that names both roles.
func (id Identity) Require(need Role) error {
	if id.Role.Allows(need) {
		return nil
	}
	return fmt.Errorf("%w: role %s of tenant %q may not do what needs role %s", ErrPermission, id.Role, id.Tenant, need)
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity NewContext put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
