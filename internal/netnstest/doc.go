// Package netnstest gives end-to-end tests and benchmarks machines of their
// own without leaving this host: network namespaces the test creates,
// switched over a bridge the test creates, on a private subnet that collides
// with nothing on the host. Control planes and agents run inside them, so
// every address a test talks to belongs to the test. Everything is torn down
// in t.Cleanup, also when the test fails.
//
// It is for tests only, and never touches an address, route or interface
// it did not create.
package netnstest
