package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"

	"anvil.dev/anvil/agent"
	api "anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

func newCertsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make, check and renew this master's certificates and kubeconfigs",
		Long: `Manage the control-plane PKI in kubeadm's layout: the CAs, the leaf
certificates, the service-account and backup signing key pairs under
/etc/kubernetes/pki, and the admin, controller-manager and scheduler
kubeconfigs under /etc/kubernetes. super-admin.conf (system:masters, past
RBAC) is on the first master only, as kubeadm does; generate --super-admin
makes one on any master when you need it.`,
		Example: `  anvil certs generate -f cluster.yaml --node m1
  anvil certs check-expiration
  anvil certs renew all -f cluster.yaml --node m1
  anvil certs renew-due
  anvil certs ca-hash
  anvil certs rotate-ca --stage drop`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCertsGenerateCmd(a), newCertsCheckExpirationCmd(a), newCertsRenewCmd(a), newCertsRenewDueCmd(a), newCertsCAHashCmd(a), newCertsRotateCACmd(a))
	return cmd
}

// certsPaths are the directory flags every certs command shares. --dir and
// --kubeconfig-dir are host paths, resolved under --root like every other.
type certsPaths struct {
	root          string
	dir           string
	kubeconfigDir string
}

func (p *certsPaths) addFlags(cmd *cobra.Command, kubeconfigs bool) {
	cmd.Flags().StringVar(&p.root, "root", "/", "host root directory every path is resolved under")
	cmd.Flags().StringVar(&p.dir, "dir", hostfs.PKIDir, "PKI directory (under --root)")
	if kubeconfigs {
		cmd.Flags().StringVar(&p.kubeconfigDir, "kubeconfig-dir", hostfs.KubernetesDir, "kubeconfig directory (under --root)")
	}
}

func (p certsPaths) pki() string { return hostfs.Root(p.root).Path(p.dir) }

func (p certsPaths) kubeconfigs() string {
	if p.kubeconfigDir == "" {
		return ""
	}
	return hostfs.Root(p.root).Path(p.kubeconfigDir)
}

// certsClusterFlags name the cluster file and the master it is for.
type certsClusterFlags struct {
	file string
	node string
}

func (f *certsClusterFlags) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "cluster file")
	cmd.Flags().StringVar(&f.node, "node", "", "name of this master in the cluster file")
	_ = cmd.MarkFlagRequired("file")
	_ = cmd.MarkFlagRequired("node")
}

// config loads the cluster file, shows its warnings on stderr and returns
// the node's PKI config.
func (f certsClusterFlags) config(a *app) (pki.Config, error) {
	c, warnings, err := api.Load(f.file)
	for _, w := range warnings {
		fmt.Fprintln(a.errOut, warningLine(w))
	}
	if err != nil {
		return pki.Config{}, err
	}
	return pki.ConfigFromCluster(c, f.node)
}

// certsWriteOptions are the flags of the commands that write certificates
// (generate, renew).
type certsWriteOptions struct {
	paths      certsPaths
	cluster    certsClusterFlags
	force      bool
	superAdmin bool
	output     string
}

func newCertsGenerateCmd(a *app) *cobra.Command {
	var o certsWriteOptions
	cmd := &cobra.Command{
		Use:   "generate -f FILE --node NAME",
		Short: "Make whatever certificates and kubeconfigs are missing or out of date",
		Long: `Make this master's PKI from the cluster file: CAs, leaf certificates,
the service-account key pair and kubeconfigs. Files that are still right are
kept byte for byte, so running it again changes nothing. A leaf whose SANs,
subject or key no longer match, or that has expired, is re-issued from the same
CA. A CA is never overwritten. Leaves or kubeconfigs of a different CA, a CA
whose key does not match and stale kubeconfigs are refused unless --force.
Every file is checked before anything is written: on error nothing changed.`,
		Example: `  anvil certs generate -f cluster.yaml --node m1
  # lay out a host under a scratch directory
  anvil certs generate -f cluster.yaml --node m1 --root /tmp/m1
  # after adding pki.certSANs: only the apiserver certificate is re-issued
  anvil certs generate -f cluster.yaml --node m1 -o json
  # a break-glass system:masters kubeconfig on a master that has none
  anvil certs generate -f /etc/anvil/cluster.yaml --node m2 --super-admin`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runCertsGenerate(a, o) },
	}
	o.paths.addFlags(cmd, true)
	o.cluster.addFlags(cmd)
	cmd.Flags().BoolVar(&o.force, "force", false, "replace leaves and kubeconfigs of a different CA, stale kubeconfigs and a CA whose key does not match")
	cmd.Flags().BoolVar(&o.superAdmin, "super-admin", false, "also make super-admin.conf (system:masters, bypasses RBAC), which only the first master gets from init; remove it once used")
	addOutputFlag(cmd, &o.output)
	return cmd
}

func runCertsGenerate(a *app, o certsWriteOptions) error {
	cfg, err := o.cluster.config(a)
	if err != nil {
		return err
	}
	results, err := pki.Ensure(o.paths.pki(), cfg, pki.Options{KubeconfigDir: o.paths.kubeconfigs(), Force: o.force, SuperAdmin: o.superAdmin})
	if err != nil {
		return err
	}
	return printOutput(a.out, o.output, results, func() error { return printResults(a.out, results) })
}

func newCertsRenewCmd(a *app) *cobra.Command {
	var o certsWriteOptions
	cmd := &cobra.Command{
		Use:   "renew all|NAME... -f FILE --node NAME",
		Short: "Issue certificates and kubeconfigs again, with new keys",
		Long: `Issue the named leaf certificates and kubeconfigs again from their CAs,
valid from now, with the SANs the cluster file gives and with new keys (as
kubeadm does: a renewal is also the answer to a key that may have leaked).
CAs are never renewed. Restart the components that use them afterwards.

Names: ` + strings.Join(pki.RenewableNames(), ", ") + `.`,
		Example: `  anvil certs renew all -f cluster.yaml --node m1
  anvil certs renew apiserver admin.conf -f cluster.yaml --node m1`,
		Args:      cobra.MinimumNArgs(1),
		ValidArgs: pki.RenewableNames(),
		RunE:      func(_ *cobra.Command, names []string) error { return runCertsRenew(a, o, names) },
	}
	o.paths.addFlags(cmd, true)
	o.cluster.addFlags(cmd)
	cmd.Flags().BoolVar(&o.force, "force", false, "also renew leaves and kubeconfigs of a different CA")
	addOutputFlag(cmd, &o.output)
	return cmd
}

func runCertsRenew(a *app, o certsWriteOptions, names []string) error {
	cfg, err := o.cluster.config(a)
	if err != nil {
		return err
	}
	results, err := pki.Renew(o.paths.pki(), cfg, names, pki.Options{KubeconfigDir: o.paths.kubeconfigs(), Force: o.force})
	if err != nil {
		return err
	}
	if err := printOutput(a.out, o.output, results, func() error { return printResults(a.out, results) }); err != nil {
		return err
	}
	a.progress("Restart kube-apiserver, kube-controller-manager, kube-scheduler and etcd to use the renewed certificates.")
	return nil
}

func newCertsRenewDueCmd(a *app) *cobra.Command {
	var root, output string
	var loop bool
	var within time.Duration
	cmd := &cobra.Command{
		Use:   "renew-due",
		Short: "Renew the certificates that are due and restart what reads them",
		Long: `Renew this master's leaf certificates and kubeconfigs that have a third of
their lifetime or less left, then restart the components that read them, one at
a time, each ready before the next. The masters take turns (the kube-system
Lease ` + master.RenewLease + `), so no two restart their components at once.

Init and join install a timer that runs this on every master (` + master.RenewJobName + `.timer,
every tenth of pki.certValidity, between a minute and an hour); in the process
layout anvil's supervisor runs 'anvil certs renew-due --loop'. With nothing due
it changes nothing. What it renewed is recorded, and 'anvil certs
check-expiration' shows it. Certificates signed by a CA whose key is not here
(an external CA), and CAs within 90 days of their end, are warned about: anvil
renews neither. A worker's kubelet renews its certificates through the API.`,
		Example: `  anvil certs renew-due
  # before a change freeze: also what falls due in the next 90 days
  anvil certs renew-due --within 2160h
  systemctl list-timers ` + master.RenewJobName + `.timer
  journalctl -u ` + master.RenewJobName + `.service`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			task, done := a.nodeTask(hostnameOr("certs"))
			defer done()
			o := master.RenewOptions{Root: hostfs.Root(root), Log: a.logger(), Task: task}
			if within < 0 {
				return usageError("--within must not be negative")
			}
			if within > 0 {
				if loop {
					return usageError("--within is for one run: use it without --loop")
				}
				o.Now = time.Now().Add(within)
			}
			if !loop {
				res, err := master.RenewDue(cmd.Context(), o)
				if err != nil {
					return err
				}
				return printOutput(a.out, output, res, func() error { return printRenewResult(a.out, res) })
			}
			if output != "" {
				return usageError("--loop keeps running: use it without -o")
			}
			return master.RunRenewLoop(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().BoolVar(&loop, "loop", false, "keep running, renewing what is due every tenth of pki.certValidity (the process layout's timer)")
	cmd.Flags().DurationVar(&within, "within", 0, "also renew what falls due within this long from now (e.g. 2160h before a 90-day freeze)")
	addOutputFlag(cmd, &output)
	return cmd
}

func printRenewResult(w io.Writer, res *master.RenewResult) error {
	for _, l := range res.Warnings {
		fmt.Fprintln(w, "warning: "+l)
	}
	if r := res.Renewal; r != nil {
		fmt.Fprintf(w, "renewed %s\n", strings.Join(r.Renewed, ", "))
		fmt.Fprintf(w, "restarted %s\n", cmp.Or(strings.Join(r.Restarted, ", "), "nothing"))
	} else {
		fmt.Fprintln(w, "nothing due")
	}
	if !res.NextDue.IsZero() {
		fmt.Fprintf(w, "next due %s\n", res.NextDue.UTC().Format(time.RFC3339))
	}
	return nil
}

// printResults is one line per file: action, name, path and why.
func printResults(w io.Writer, results []pki.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range results {
		line := fmt.Sprintf("%s\t%s\t%s", r.Action, r.Name, r.Path)
		if r.Reason != "" {
			line += "\t(" + r.Reason + ")"
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

type certsCheckExpirationOptions struct {
	paths  certsPaths
	output string
}

func newCertsCheckExpirationCmd(a *app) *cobra.Command {
	var o certsCheckExpirationOptions
	cmd := &cobra.Command{
		Use:   "check-expiration",
		Short: "Show when every certificate and kubeconfig expires",
		Long: `List every leaf certificate and kubeconfig with its expiry, the time it has
left and the CA that signed it, then the CAs, as kubeadm's "certs
check-expiration" does. "Externally managed" means the CA's key is not on this
machine, so anvil cannot renew what it signed. Then the last automatic renewals
this master made (anvil certs renew-due, run by its timer), and a warning for
each CA within 90 days of its end.`,
		Example: `  anvil certs check-expiration
  anvil certs check-expiration --root /tmp/m1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runCertsCheckExpiration(a, o) },
	}
	o.paths.addFlags(cmd, true)
	addOutputFlag(cmd, &o.output)
	return cmd
}

func runCertsCheckExpiration(a *app, o certsCheckExpirationOptions) error {
	exp, err := pki.CheckExpiration(o.paths.pki(), pki.Options{KubeconfigDir: o.paths.kubeconfigs()})
	if err != nil {
		return err
	}
	renewals, err := master.ReadRenewals(hostfs.Root(o.paths.root))
	if err != nil {
		return err
	}
	out := expirationOutput{Expiration: exp, Warnings: pki.CAWarnings(exp, time.Now()), Renewals: renewals}
	return printOutput(a.out, o.output, out, func() error { return printExpiration(a.out, out) })
}

// expirationOutput is what check-expiration prints: pki's report, CAs close
// to their end, and the renewals the timer made on this master.
type expirationOutput struct {
	pki.Expiration
	Warnings []string         `json:"warnings,omitempty"`
	Renewals []master.Renewal `json:"renewals,omitempty"`
}

func printExpiration(w io.Writer, exp expirationOutput) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tRESIDUAL TIME\tCERTIFICATE AUTHORITY\tEXTERNALLY MANAGED")
	for _, e := range exp.Certificates {
		if e.Missing {
			fmt.Fprintf(tw, "!MISSING! %s\t\t\t%s\t%s\n", e.Name, e.CA, yesNo(e.ExternallyManaged))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, expires(e), residual(e), e.CA, yesNo(e.ExternallyManaged))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CERTIFICATE AUTHORITY\tEXPIRES\tRESIDUAL TIME\tEXTERNALLY MANAGED")
	for _, e := range exp.CertificateAuthorities {
		if e.Missing {
			fmt.Fprintf(tw, "!MISSING! %s\t\t\t\n", e.Name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, expires(e), residual(e), yesNo(e.ExternallyManaged))
	}
	if len(exp.Renewals) > 0 {
		// The last few; -o json has all the record keeps.
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "AUTOMATIC RENEWAL\tRENEWED\tRESTARTED")
		for _, r := range exp.Renewals[max(0, len(exp.Renewals)-5):] {
			what := cmp.Or(strings.Join(r.Restarted, ", "), "-")
			if r.Error != "" {
				what += " (failed: " + r.Error + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Time.UTC().Format("Jan 02, 2006 15:04:05 UTC"), strings.Join(r.Renewed, ", "), what)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range exp.Warnings {
		fmt.Fprintln(w, "\nwarning: "+l)
	}
	return nil
}

func expires(e pki.Expiry) string { return e.Expires.UTC().Format("Jan 02, 2006 15:04 UTC") }

// residual is kubeadm's short form ("364d", "9y"), "<expired>" once past.
func residual(e pki.Expiry) string {
	if e.ResidualSeconds <= 0 {
		return "<expired>"
	}
	return duration.ShortHumanDuration(time.Duration(e.ResidualSeconds) * time.Second)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

type certsCAHashOptions struct {
	paths certsPaths
	cert  string
}

func newCertsCAHashCmd(a *app) *cobra.Command {
	var o certsCAHashOptions
	cmd := &cobra.Command{
		Use:   "ca-hash",
		Short: "Print the cluster CA's public-key pin for anvil join",
		Long: `Print sha256:<hex> of the CA certificate's SubjectPublicKeyInfo: the value
"anvil join --ca-cert-hash" and kubeadm's --discovery-token-ca-cert-hash take.
It is the same as:
  openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum`,
		Example: `  anvil certs ca-hash
  anvil certs ca-hash --cert ./ca.crt
  anvil join 10.0.0.10:6443 --token "$TOKEN" --ca-cert-hash "$(anvil certs ca-hash)"`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path := o.cert
			if path == "" {
				path = hostfs.Root(o.paths.root).Join(o.paths.dir, pki.CertFile(pki.CACertAndKeyBaseName))
			}
			h, err := pki.CAHashFromFile(path)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.out, h)
			return err
		},
	}
	o.paths.addFlags(cmd, false)
	cmd.Flags().StringVar(&o.cert, "cert", "", "CA certificate file (a plain path, not under --root); default: ca.crt in --dir")
	cmd.MarkFlagsMutuallyExclusive("cert", "dir")
	return cmd
}

func newCertsRotateCACmd(a *app) *cobra.Command {
	var root, stage, keyFile, output string
	var prepare bool
	cmd := &cobra.Command{
		Use:   "rotate-ca --stage trust|reissue|drop",
		Short: "Do this machine's part of one stage of a CA rotation",
		Long: `Replace the cluster's CAs (kubernetes, etcd-ca, front-proxy-ca) without
downtime, in three stages. Each stage runs on every master, one at a time, then
on every worker, before the next stage begins; 'anvil cluster rotate-ca -f
cluster.yaml' runs them all in that order over SSH, and is what you normally use.

  trust    the next CAs are trusted beside the current ones (ca.crt holds both,
           the kubeconfigs and the kubelets trust both); everything still signs
           with the current CAs. On the first master --prepare makes the next
           CAs and uploads them sealed with the certificate key; the other
           masters fetch them with the same key. Pods that talk to the API
           read the new kube-root-ca.crt only when they start again.
  reissue  the next CAs sign (ca.key is theirs; the old CAs stay trusted);
           every leaf certificate and kubeconfig is issued again, the nodes'
           client certificates too, and the kubelets ask for new serving ones.
  drop     the old CAs are no longer trusted anywhere.

Each stage restarts what reads a changed file, one component at a time, each
ready before the next (the VIP goes to another master first); the masters take
turns, so etcd's quorum and the API stay up. cluster-info publishes the bundle
of each stage, which is where workers read it. Running a finished stage again
does nothing. Kubeconfigs copied off the masters (yours) need the new CA
before the reissue stage: anvil cluster rotate-ca rewrites the one it uses.`,
		Example: `  # on the first master, the certificate key on stdin
  anvil certs rotate-ca --stage trust --prepare --certificate-key-file - < key
  # on the other masters, then on every worker
  anvil certs rotate-ca --stage trust --certificate-key-file - < key
  anvil certs rotate-ca --stage trust
  # then reissue everywhere, then drop everywhere
  anvil certs rotate-ca --stage reissue -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(pki.RotateStages(), stage) {
				return usageError("--stage must be one of %s", strings.Join(pki.RotateStages(), ", "))
			}
			task, done := a.nodeTask(hostnameOr("rotate-ca"))
			defer done()
			r := hostfs.Root(root)
			if st, err := master.ReadNodeState(r); err == nil && st.Role == api.RoleMaster {
				o := master.RotateCAOptions{Root: r, Stage: stage, Prepare: prepare, Log: a.logger(), Task: task}
				if stage == pki.RotateTrust {
					line, err := readSecret(bufio.NewReader(io.LimitReader(a.in, 4096)), "certificate-key", "", keyFile,
						"the trust stage on a master needs the certificate key that seals the next CAs: --certificate-key-file FILE or - (stdin); anvil cluster rotate-ca makes one")
					if err != nil {
						return err
					}
					if o.Key, err = master.ParseCertificateKey(line.value); err != nil {
						return line.wrap(err)
					}
				}
				res, err := master.RotateCA(cmd.Context(), o)
				if err != nil {
					return err
				}
				return printOutput(a.out, output, res, func() error {
					fmt.Fprintf(a.out, "%s: stage %s: %d files changed, restarted %s\n", res.Node, res.Stage, len(res.Changed), listOrNone(res.Restarted))
					if n := res.NodeStack; n != nil {
						fmt.Fprintf(a.out, "%s: node stack trusts %s, restarted %s\n", n.Node, strings.Join(n.Trusts, " "), listOrNone(n.Restarted))
					}
					return nil
				})
			}
			if prepare {
				return usageError("--prepare is for the first master: the next CAs are made there")
			}
			res, err := agent.RotateCA(cmd.Context(), agent.RotateCAOptions{Root: r, Stage: stage, Log: a.logger()})
			if err != nil {
				return err
			}
			return printOutput(a.out, output, res, func() error {
				fmt.Fprintf(a.out, "%s: stage %s: trusts %s, restarted %s\n", res.Node, res.Stage, strings.Join(res.Trusts, " "), listOrNone(res.Restarted))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().StringVar(&stage, "stage", "", "stage to run: "+strings.Join(pki.RotateStages(), ", "))
	cmd.Flags().BoolVar(&prepare, "prepare", false, "trust stage, first master: make the next CAs and upload them sealed with the certificate key")
	cmd.Flags().StringVar(&keyFile, "certificate-key-file", "", "trust stage, masters: file holding the certificate key, or - for stdin")
	addOutputFlag(cmd, &output)
	return cmd
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}
