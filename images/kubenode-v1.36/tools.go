//go:build tools

// This file only pins the node component packages so that `go mod tidy`
// keeps every module the kubelet and kube-proxy need; nothing imports it.
package kubenode

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
