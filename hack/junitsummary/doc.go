// Command junitsummary reads the JUnit report the upstream e2e suite writes
// (junit_01.xml under its --report-dir) and prints what `make conformance`
// shows: how many tests passed, failed and were skipped, each failure with
// the first lines of its message, each skip with its reason, and how many
// tests the focus left out (the suite reports those as skipped too, without
// a reason).
//
//	go run ./hack/junitsummary bin/conformance/report/junit_01.xml
//
// It exits 1 when a test failed, 2 when the report cannot be read.
package main
