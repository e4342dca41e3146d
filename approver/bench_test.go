package approver_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/internal/benchreport"
)

// BenchmarkCSRToApproval measures, on a real control plane, the time from
// creating a CSR to seeing it approved (and then signed), for the approver
// on kubelet serving CSRs against the controller-manager's csrapproving on
// default-token client CSRs in the same cluster — the approval a join
// waits for today — and the time from a Node's registration to the
// approval of the serving CSR that was waiting for it. Run it with
// -benchtime 1x (make bench): each figure is a median of its own runs.
func BenchmarkCSRToApproval(b *testing.B) {
	const runs = 10
	c := startCluster(b)
	c.createNode(b, "bench-w1", "192.0.2.31")
	node := c.nodeClient(b, "bench-w1")
	tok := c.tokenClient(b, c.cp.Token(b, time.Hour))
	const id = "bench-approver"
	c.startApprover(b, approver.Options{Identity: id})
	c.waitLeader(b, id, 30*time.Second)

	var anvilApproved, anvilIssued, cmApproved, cmIssued, nodeToApproved []time.Duration
	for i := range runs + 1 { // the first of each is a warm-up
		name := fmt.Sprintf("bench-serving-%d", i)
		start := createCSR(b, node, name, servingSigner, servingUsages, request{key: newKey(b), cn: "system:node:bench-w1", dns: []string{"bench-w1"}, ips: []string{"192.0.2.31"}})
		_, approved := c.waitCSR(b, name, 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		_, signed := c.waitCSR(b, name, 30*time.Second, issued)

		cmName := fmt.Sprintf("bench-default-%d", i)
		cmStart := createCSR(b, tok, cmName, clientSigner, clientUsages, request{key: newKey(b), cn: fmt.Sprintf("system:node:bench-new-%d", i)})
		_, cmApprovedAt := c.waitCSR(b, cmName, 30*time.Second, decidedBy(certificatesv1.CertificateApproved, "AutoApproved"))
		_, cmSigned := c.waitCSR(b, cmName, 30*time.Second, issued)
		if i == 0 {
			continue
		}
		anvilApproved = append(anvilApproved, approved.Sub(start))
		anvilIssued = append(anvilIssued, signed.Sub(start))
		cmApproved = append(cmApproved, cmApprovedAt.Sub(cmStart))
		cmIssued = append(cmIssued, cmSigned.Sub(cmStart))
	}
	for i := range 5 {
		n := fmt.Sprintf("bench-late-%d", i)
		ip := fmt.Sprintf("192.0.2.%d", 40+i)
		createCSR(b, c.nodeClient(b, n), n, servingSigner, servingUsages, request{key: newKey(b), cn: "system:node:" + n, dns: []string{n}, ips: []string{ip}})
		time.Sleep(time.Second) // pending by now
		start := time.Now()
		c.createNode(b, n, ip)
		_, approved := c.waitCSR(b, n, 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		nodeToApproved = append(nodeToApproved, approved.Sub(start))
	}

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	cm, cmSign := median(cmApproved), median(cmIssued)
	benchreport.Report(b, benchreport.Figure{
		Name: "CSR to approval, anvil (median of 10)", Value: ms(median(anvilApproved)), Unit: "ms", Anchor: ms(cm),
		Note: fmt.Sprintf("controller-manager's csrapproving, same cluster; anvil %v", round(anvilApproved)),
	})
	benchreport.Report(b, benchreport.Figure{
		Name: "CSR to certificate, anvil (median of 10)", Value: ms(median(anvilIssued)), Unit: "ms", Anchor: ms(cmSign),
		Note: fmt.Sprintf("default-token CSR approved by the controller-manager; it took %v", round(cmIssued)),
	})
	benchreport.Report(b, benchreport.Figure{
		Name: "Node registered to approval (median of 5)", Value: ms(median(nodeToApproved)), Unit: "ms", Anchor: 500,
		Note: fmt.Sprintf("the agent's CSR poll interval; runs %v", round(nodeToApproved)),
	})
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func round(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
