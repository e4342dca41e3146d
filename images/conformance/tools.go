//go:build tools

// This file only pins the packages the conformance build compiles, so that
// `go mod tidy` keeps every module they need; nothing imports package
// conformance.
package conformance

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/sample-apiserver"
)
