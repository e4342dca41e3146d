// Package installer provisions a fleet of machines over SSH from a cluster
// file: `anvil cluster apply|reset|status|kubeconfig|backup|restore|support-bundle`.
//
// Every flow is a literal list of phases (apply.go, reset.go, status.go,
// backup.go, restore.go, supportbundle.go),
// each in its own file. A phase first plans: from the facts gathered
// read-only at the start (facts.go) it decides, per host, which steps it
// would take. Only then does it act. So a dry run prints exactly what a real
// run would do, and a second apply over an unchanged cluster finds nothing
// to do: binaries are compared by sha256 on the host, init and join are
// skipped on machines that already completed them.
//
// The transport is internal/sshx: host keys checked strictly against
// known_hosts (unknown hosts are added only with AcceptNewHostKeys), keys
// from identity files and ssh-agent, bastions, passwordless sudo for
// logins other than root, keep-alives and bounded retries. Secrets (join
// tokens, certificate keys) travel on a command's stdin or in 0600 files
// written from stdin, never on a command line, so no process list and no
// sudo log ever shows one.
//
// Each host gets what its role and runtime need of the build's payload
// (bundle.go): a master everything, a worker the node stack (kubelet,
// kube-proxy, containerd, runc, crictl, the CNI plugins, the pause,
// CoreDNS and test images), a host with runtime none no node stack; anvil
// goes everywhere. The files land in /opt/anvil/bin/<kubernetes version>/
// (CNI plugins in cni/, image archives in images/) with the manifest
// images.Install writes for the host's role (plus anvil's own entry), zstd
// compressed in transit, verified by sha256 on the host and renamed into
// place, with links: binaries in /usr/local/bin, CNI plugins in
// /opt/cni/bin, the build's image archives in /var/lib/anvil/images. The
// cluster file's image archives (images:, archives.go) are checked on the
// workstation before anything is uploaded and go to
// /var/lib/anvil/images on every host that runs pods, for its node agent
// to import. The host's anvil remembers each
// verified file's sha256 with its inode, size, mtime and ctime
// (/opt/anvil/sha256-cache.json), so a second apply reads no binary again
// and still notices any write.
//
// Every join gets a bootstrap token of its own, bound to its host's name
// (master.TokenOptions.Node), so that anvil's approver lets it obtain a
// client certificate for that node alone, and only while no Node of that
// name exists; it is made through the first master's admin kubeconfig
// just before the join and deleted as soon as the join is over, succeeded
// or not (token.go). The tokens `anvil init` and `anvil init phase
// upload-certs` print, bound to no node, are never used and deleted at
// once. What a deletion missed, and the certificates upload-certs seals in
// the cluster, the credentials phase deletes once the joins are over; a
// run that is interrupted leaves them to expire (TokenTTL, an hour for
// the certificates).
//
// The package never runs a control-plane component itself: on the hosts it
// runs `anvil init`, `anvil join`, `anvil status` and `anvil reset`. What the person at the terminal sees goes through one
// internal/progress reporter; details go to the injected *slog.Logger.
package installer
