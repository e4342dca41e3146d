// Package backoff is the retry delay every loop of anvil's waits with: a
// doubling delay with jitter, a spread for periodic work, and a sleep that
// ends with its context. It never retries anything itself.
package backoff
