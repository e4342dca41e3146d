// Package benchreport prints a measured figure beside the anchor it must beat
// and the ratio between them, in one line a person can scan and `make bench`
// can collect:
//
//	FIGURE  init-to-ready  4.21 s  anchor ≤ 6 s (kubeadm 40–55 s)  ratio 0.70  ok
//
// It measures nothing itself and never fails a benchmark: the figures and
// anchors are the benchmarks' own.
package benchreport
