// Package mastertest brings up a real control plane for end-to-end tests
// and benchmarks: `anvil init --layout process` runs the embedded etcd and
// the real kube-apiserver, kube-controller-manager and kube-scheduler (built
// by make kube) inside a network namespace the test creates, under a
// temporary root. Tests talk to it over the test's own bridge; Cleanup runs
// `anvil reset` and removes the namespace, also when the test fails.
//
// It is for tests only; nothing outside _test.go files imports it.
package mastertest
