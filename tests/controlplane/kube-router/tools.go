//go:build tools

// Package tools pins kube-router, run only as the NetworkPolicy enforcer.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
