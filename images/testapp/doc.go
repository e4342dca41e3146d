// Command testapp is anvil's test image (localhost/anvil/testapp): a static
// HTTP server that answers with the pod it runs in, so that pod-to-pod and
// Service checks can tell which pod answered, and a client for the same
// checks from inside another pod (`kubectl exec POD -- /testapp get URL`).
//
//	testapp serve [-listen :8080]   GET / → the pod's name; /info → JSON; /healthz → ok
//	testapp get [-timeout 5s] URL   print URL's body; exit 1 unless it answers 2xx
//	testapp lookup [-timeout 5s] NAME  print NAME's addresses through the pod's resolver
//	testapp dnsload -server ADDR:PORT [-parallel 4] [-duration 10s] NAME
//	                                query NAME's A record as fast as the clients can; print qps, p50, p99 as JSON
//	testapp watch [-interval 20ms] [-duration 1m] URL
//	                                request URL repeatedly; print "UNIXNANO answer" whenever the answer changes
//
// The pod's name is $POD_NAME (the downward API) or else the hostname, which
// Kubernetes sets to the pod's name.
//
// It may import only the standard library: its build's input hash covers
// this directory and go.mod, not the rest of anvil.
//
// It is for tests and demos only, and imports nothing but the standard library.
package main
