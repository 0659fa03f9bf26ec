//go:build tools

// Package tools pins the containerd commands this module builds: the daemon
// and the runc shim the kubelet's pods run under.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
