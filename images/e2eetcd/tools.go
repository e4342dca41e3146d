//go:build tools

// This file only pins the package the build compiles, so that `go mod
// tidy` keeps every module it needs; nothing imports package e2eetcd.
package e2eetcd

import _ "go.etcd.io/etcd/server/v3"
