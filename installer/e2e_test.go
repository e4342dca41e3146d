package installer

import (
	"testing"
	"time"

	"anvil.dev/anvil/lab/labtest"
)

// e2e is what the end-to-end tests share: one lab of three masters and two
// workers (Debian machines with systemd as PID 1 and a real sshd), the
// anvil binary apply uploads, the Kubernetes build, and the cache of
// compressed binaries every apply of the test uses.
type e2e struct {
	l     *labtest.Lab
	bin   string
	kube  []string
	cache string
}

// TestInstallerE2E runs every end-to-end check of the installer on one lab
// of 3 masters + 2 workers, in an order where each part leaves the
// machines as the next expects them:
//
//   - transport: dry runs only, which change nothing: strict host keys
//     (unknown refused, then accepted on request), sudo, a sudo that wants
//     a password, a bastion, ssh-agent keys, an unreachable host;
//   - upload: the binaries on the first master alone, decided by content;
//   - cluster: apply, a second apply that changes nothing, two hosts added
//     with their SSH sessions killed mid-join and a re-run that converges,
//     the CIS benchmark on the first master, secrets, status, a changed
//     host key, and a reset that leaves the machines clean.
func TestInstallerE2E(t *testing.T) {
	labtest.Require(t)
	start := time.Now()
	e := &e2e{bin: buildAnvil(t), kube: kubeDirs(t), cache: t.TempDir()}
	e.l = labtest.Start(t, labtest.Options{Masters: 3, Workers: 2})
	t.Logf("lab %s of 3 masters and 2 workers up in %s", e.l.Name, time.Since(start).Round(100*time.Millisecond))
	t.Run("transport", func(t *testing.T) { transportE2E(t, e) })
	t.Run("upload", func(t *testing.T) { uploadE2E(t, e) })
	t.Run("cluster", func(t *testing.T) { clusterE2E(t, e) })
}
