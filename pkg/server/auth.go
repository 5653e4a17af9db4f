package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/auth"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// methodRoles is the role each kvcache.v1 method needs. Methods of other
// services (reflection) need read; health checks need nothing, so load
// balancers and probes work without credentials (they reveal only
// SERVING or not).
var methodRoles = map[string]auth.Role{
	kvcachev1.KVCacheService_Lookup_FullMethodName: auth.RoleRead,
	kvcachev1.KVCacheService_Get_FullMethodName:    auth.RoleRead,
	kvcachev1.KVCacheService_Stats_FullMethodName:  auth.RoleRead,
	kvcachev1.KVCacheService_Put_FullMethodName:    auth.RoleWrite,
	kvcachev1.KVCacheService_Delete_FullMethodName: auth.RoleAdmin,
}

const healthPrefix = "/grpc.health.v1.Health/"

// AuthInterceptors return the interceptors that identify every caller with
// v (bearer token in the "authorization" metadata, else the verified TLS
// client certificate, else protected mode), refuse it with Unauthenticated
// or PermissionDenied, and put its auth.Identity in the handler's context,
// from which every handler takes the tenant it folds into namespaces.
// Install them first in the chain, so nothing runs for a refused caller.
func AuthInterceptors(v *auth.Verifier) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return h(ctx, req)
		}
		ctx, err := authorize(ctx, v, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return h(srv, ss)
		}
		ctx, err := authorize(ss.Context(), v, info.FullMethod)
		if err != nil {
			return err
		}
		return h(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
	return unary, stream
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

func authorize(ctx context.Context, v *auth.Verifier, method string) (context.Context, error) {
	token, hasToken, err := bearer(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	p, _ := peer.FromContext(ctx)
	var cert *x509.Certificate
	if p != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			cert = ti.State.VerifiedChains[0][0]
		}
	}
	id, err := v.Identify(token, hasToken, cert, peerAddr(p))
	if err == nil {
		need, ok := methodRoles[method]
		if !ok {
			need = auth.RoleRead
		}
		err = id.Require(need)
	}
	if err != nil {
		return nil, authStatus(err)
	}
	return auth.NewContext(ctx, id), nil
}

func peerAddr(p *peer.Peer) net.Addr {
	if p == nil {
		return nil
	}
	return p.Addr
}

// bearer returns the token of the "authorization: Bearer TOKEN" metadata.
func bearer(ctx context.Context) (token string, ok bool, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch {
	case len(vals) == 0:
		return "", false, nil
	case len(vals) > 1:
		return "", false, errors.New("more than one authorization header")
	}
	scheme, tok, found := strings.Cut(vals[0], " ")
	if !found || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", false, errors.New(`authorization metadata must be "Bearer TOKEN"`)
	}
	return strings.TrimSpace(tok), true, nil
}

// authStatus maps the auth sentinels to their codes.
func authStatus(err error) error {
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, auth.ErrPermission):
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// identity is the caller of ctx; a server without AuthInterceptors (in
// process, tests) treats every caller as an admin of the shared tenant.
func identity(ctx context.Context) auth.Identity {
	if id, ok := auth.FromContext(ctx); ok {
		return id
	}
	return auth.Identity{Role: auth.RoleAdmin}
}

// tenantNS is the namespace the store sees for a caller's namespace: the
// caller's tenant folded in (docs/keys.md, "Tenant derived by the
// server"), so no request can name another tenant's blocks.
func tenantNS(ctx context.Context, ns prefix.Namespace) prefix.Namespace {
	return prefix.WithTenant(ns, identity(ctx).Tenant)
}
