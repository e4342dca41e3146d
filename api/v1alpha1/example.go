package v1alpha1

import (
	"fmt"
	"strings"
)

// ExampleClusterFile is what `anvil config init` prints: every section, each
// field explained, values that decode strictly and validate without a
// warning (a test holds it to that). It is written by hand rather than
// marshalled so that it can carry comments and commented-out alternatives.
const ExampleClusterFile = `# An anvil cluster file. Check it with: anvil config validate -f cluster.yaml
# Apply it with:                        anvil cluster apply -f cluster.yaml
# Fields marked "default" may be left out; the value shown is the default.
apiVersion: anvil.dev/v1alpha1
kind: Cluster

# The cluster's name: a DNS label (lowercase letters, digits, '-'). It names
# kubeconfig contexts and is stamped into backups, so a restore refuses a
# backup taken from another cluster.
name: example

# The Kubernetes release to run, as vMAJOR.MINOR.PATCH
# ("anvil images list" shows the supported ones). Default: v1.37.2.
kubernetesVersion: v1.37.2

controlPlane:
  # Where clients reach the apiserver: an IP address or DNS name, no port.
  # Default: the VIP when one is set, else the first master's address.
  endpoint: 10.0.0.10
  # The apiserver's secure port. Default: 6443.
  port: 6443
  # A free address on the masters' network that one master holds at a
  # time, so the endpoint survives the loss of any master. Leave it out to
  # use a load balancer or DNS instead.
  vip: 10.0.0.10
  # How masters run etcd and the control-plane components:
  #   systemd     one systemd unit per component (default)
  #   static-pod  manifests in /etc/kubernetes/manifests for the kubelet
  #   process     anvil supervises them itself (machines without systemd)
  layout: systemd

# How anvil connects to every host over SSH. A host's own ssh block
# overrides these field by field.
ssh:
  # The login user. Default: root.
  user: root
  # Default: 22.
  port: 22
  # A private key; leave it out to use the keys in ssh-agent.
  identityFile: ~/.ssh/id_ed25519
  # Host keys are checked against this file, never accepted blindly.
  # Default: ~/.ssh/known_hosts.
  knownHosts: ~/.ssh/known_hosts
  # Run commands through passwordless "sudo -n". Default: false for root,
  # true for any other user.
  sudo: false
  # A jump host every connection goes through (like ssh -J).
  # bastion:
  #   address: bastion.example.com   # IP address or DNS name
  #   port: 22                       # default 22
  #   user: jump                     # default: the host's ssh user
  #   identityFile: ~/.ssh/jump_ed25519

# The machines. Use an odd number of masters (1, 3 or 5): etcd needs a
# majority of them up, so 4 masters survive no more failures than 3.
hosts:
  - # The Kubernetes node name: a lowercase DNS name, unique in the file.
    name: m1
    # The address anvil reaches the host at over SSH.
    address: 10.0.0.11
    # The address cluster traffic uses, when it is not the one above (a
    # NATed or multi-homed machine). Default: address.
    # internalAddress: 192.168.10.11
    # master runs etcd and the control plane; worker runs workloads.
    role: master
  - name: m2
    address: 10.0.0.12
    role: master
  - name: m3
    address: 10.0.0.13
    role: master
  - name: w1
    address: 10.0.0.21
    role: worker
    # Labels put on the Node when it registers.
    labels:
      node.kubernetes.io/pool: general
  - name: w2
    address: 10.0.0.22
    role: worker
    labels:
      node.kubernetes.io/pool: general
    # Taints put on the Node when it registers. Effect is one of
    # NoSchedule, PreferNoSchedule, NoExecute.
    # taints:
    #   - key: dedicated
    #     value: gpu
    #     effect: NoSchedule
    # This host's own SSH settings, overriding the cluster-wide ones.
    ssh:
      user: admin
      sudo: true
    # What runs this host's pods: containerd (containerd, runc and the
    # kubelet) or none (the Node is registered and kept alive, and takes no
    # pods). Default: containerd.
    runtime: containerd

networking:
  # Service ClusterIPs come from here; the first one is the kubernetes
  # Service. At most a /12 for IPv4 (/108 for IPv6). Default: 10.96.0.0/12.
  serviceCIDR: 10.96.0.0/12
  # Pod addresses; each node gets a slice of it. Must not overlap the
  # service range or contain any host address. Default: 10.244.0.0/16.
  podCIDR: 10.244.0.0/16
  # The DNS domain of Services (name.namespace.svc.cluster.local).
  # Default: cluster.local.
  clusterDomain: cluster.local
  # The pod network: host-gw (anvil routes each node's pod range through
  # that node) or none (bring your own CNI, such as Calico or Cilium).
  # Default: host-gw.
  network: host-gw

# The etcd member anvil embeds on every master. Names follow etcd's own.
etcd:
  # The database size limit; etcd raises an alarm and refuses writes above
  # it. Default: 2Gi. More than 8Gi is beyond what etcd suggests.
  quotaBackendBytes: 2Gi
  # Applied entries between raft snapshots. Default: 10000.
  snapshotCount: 10000
  # Raft timings. Raise both on slow or distant networks; electionTimeout
  # must be at least 5 heartbeats. Defaults: 100ms and 1000ms.
  heartbeatInterval: 100ms
  electionTimeout: 1000ms

# How certificates are made (kubeadm's layout under /etc/kubernetes/pki).
pki:
  # ECDSA-P256 (default), RSA-2048, RSA-3072 or RSA-4096.
  keyAlgorithm: ECDSA-P256
  # Lifetimes, as Go durations (8760h) or whole days (365d).
  # Defaults: 3650d for CAs, 365d for everything they sign.
  caValidity: 3650d
  certValidity: 365d
  # Extra names and addresses in the apiserver certificate, beyond the
  # endpoint, the VIP, the masters and the kubernetes Service names.
  certSANs:
    - k8s.example.com

# etcd backups taken on the masters.
backup:
  # A systemd OnCalendar expression; leave it out for no scheduled backups.
  schedule: daily
  # Scheduled backups kept on each master; older ones are pruned. Default: 7.
  retain: 7
  # Where backups are kept on each master. Default: /var/lib/anvil/backups.
  dir: /var/lib/anvil/backups
  # age public keys (age-keygen prints them): every backup is encrypted to
  # all of them, so keep the matching identity somewhere safe. Without any,
  # backups are refused unless allowUnencrypted: true.
  # recipients:
  #   - age1...
  # Write backups without recipients anyway, holding every key in the clear.
  # allowUnencrypted: false
  # The key every backup is signed with, made by the masters when the
  # cluster is created; anvil cluster apply prints it. Pinned here, backups
  # signed by any other key are refused.
  # signingPublicKey: ed25519:...

# Extra flags for the control-plane components, without the leading "--".
# Flags naming certificates, keys or etcd endpoints are anvil's to set.
# Values that weaken the control plane are refused unless the component's
# allowInsecure names the flag: AlwaysAllow in authorization-mode,
# profiling: "true", tls-min-version below VersionTLS12, a bind-address
# other than loopback (controllerManager, scheduler), and an empty
# audit-log-path or audit-policy-file (apiServer).
components:
  apiServer:
    extraArgs:
      profiling: "false"
    # To profile the apiserver for a while, on purpose:
    #   extraArgs:
    #     profiling: "true"
    #   allowInsecure: [profiling]
  controllerManager:
    extraArgs:
      profiling: "false"
  scheduler:
    extraArgs:
      profiling: "false"

# Container image archives on this workstation (docker-archive or OCI tar
# files) that apply puts on every node with a runtime, where anvil imports
# them into containerd: workloads run without a registry.
# images:
#   - ./images/app.tar
`

// exampleRecipientsBlock is the commented recipients of ExampleClusterFile,
// which ExampleClusterFileFor fills in.
const exampleRecipientsBlock = `  # recipients:
  #   - age1...
`

// ExampleClusterFileFor is ExampleClusterFile with backups encrypted to
// recipient, whose identity is in keyFile: what `anvil config init` prints
// once it has made the cluster's backup key pair.
func ExampleClusterFileFor(recipient, keyFile string) string {
	return strings.Replace(ExampleClusterFile, exampleRecipientsBlock, fmt.Sprintf(`  # Its identity is in %s: keep a copy off the masters; without it no
  # backup can be read.
  recipients:
    - %s
`, keyFile, recipient), 1)
}
