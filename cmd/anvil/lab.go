package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab"
)

// labFlags are what every lab subcommand shares.
type labFlags struct {
	stateDir string
	cacheDir string
	mirror   string
	noInst   bool
}

func (f *labFlags) manager(a *app) *lab.Manager {
	return lab.New(lab.Config{
		StateDir: f.stateDir,
		CacheDir: f.cacheDir,
		Mirror:   f.mirror,
		Install:  !f.noInst,
		Progress: a.progress,
		Log:      a.logger(),
	})
}

func newLabCmd(a *app) *cobra.Command {
	f := &labFlags{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Bare-metal-like machines on this host, to try anvil and to test it",
		Long: `A lab is a set of real Debian machines on this host: systemd as PID 1, sshd,
a static address each on a private bridge, booted with systemd-nspawn from a
base file system that debootstrap builds once. 'lab up' writes a cluster file
for them, with the lab's SSH key and a known_hosts file holding each machine's
own host key, so 'anvil cluster apply' connects with strict host key checking.

Machines are named LAB-m1… (masters) and LAB-w1… (workers); commands that
take a machine find its lab from the name. Needs root, and the Debian
packages systemd-container and debootstrap (installed with apt-get when
missing, unless --no-install).

Machines can run containerd and the kubelet. For that the lab sets three
kernel settings of this host that machines cannot set themselves:
vm.overcommit_memory=1, kernel.panic=10 and kernel.panic_on_oops=1 (an oops
then reboots this host). It says so when it does, records the previous
values under --state-dir, and restores them when the last lab goes down.`,
		Example: `  # Three masters and a worker, then run a command on the first master
  sudo anvil lab up --name demo --masters 3 --workers 1
  sudo anvil lab ssh demo-m1 -- systemctl is-system-running

  # Where the cluster file, key and known_hosts are
  sudo anvil lab status --name demo -o json

  # Faults for HA tests, then everything gone
  sudo anvil lab stop demo-m2
  sudo anvil lab cut demo-m3
  sudo anvil lab down --name demo`,
	}
	cmd.PersistentFlags().StringVar(&f.stateDir, "state-dir", lab.DefaultStateDir, "where labs keep their state, keys and machine layers")
	cmd.PersistentFlags().StringVar(&f.cacheDir, "cache-dir", lab.DefaultCacheDir, "where the base file system is built and kept")
	cmd.PersistentFlags().StringVar(&f.mirror, "mirror", "", "Debian mirror for the base (default: the one this host's apt uses)")
	cmd.PersistentFlags().BoolVar(&f.noInst, "no-install", false, "do not apt-get install missing packages; say what to install instead")
	cmd.AddCommand(
		newLabUpCmd(a, f),
		newLabStatusCmd(a, f),
		newLabSSHCmd(a, f),
		newLabStopCmd(a, f),
		newLabStartCmd(a, f),
		newLabLinkCmd(a, f, "cut"),
		newLabLinkCmd(a, f, "heal"),
		newLabDownCmd(a, f),
	)
	return cmd
}

func newLabUpCmd(a *app, f *labFlags) *cobra.Command {
	var (
		spec   = lab.Spec{Name: lab.DefaultName, Masters: 1, Workers: 1}
		subnet string
		output string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create a lab and wait until every machine answers ssh",
		Long: `Creates the lab's bridge and machines, boots them in parallel and returns when
every machine's sshd answers with the host key recorded in the lab's
known_hosts and its systemd has finished booting. The first run builds the
base file system (a few minutes); later ones take seconds.

Running it again for an existing lab starts any stopped machine and changes
nothing else; a different number of machines needs 'lab down' first.`,
		Example: `  sudo anvil lab up
  sudo anvil lab up --name t --masters 3
  sudo anvil lab up --name ha --masters 3 --workers 2 --subnet 10.213.40.0/24 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subnet != "" {
				p, err := netip.ParsePrefix(subnet)
				if err != nil {
					return usageError("--subnet %q: %v", subnet, err)
				}
				spec.Subnet = p
			}
			if err := spec.Validate(); err != nil {
				return usageError("%v", err)
			}
			st, err := f.manager(a).Up(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return printOutput(a.out, output, st, func() error { return printLab(a.out, st) })
		},
	}
	cmd.Flags().StringVar(&spec.Name, "name", spec.Name, "the lab's name; machines are NAME-m1…, NAME-w1…")
	cmd.Flags().IntVar(&spec.Masters, "masters", spec.Masters, "number of masters")
	cmd.Flags().IntVar(&spec.Workers, "workers", spec.Workers, "number of workers")
	cmd.Flags().StringVar(&subnet, "subnet", "", "IPv4 subnet for the lab (default: a free /24 of "+lab.DefaultPool+")")
	addOutputFlag(cmd, &output)
	return cmd
}

func newLabStatusCmd(a *app, f *labFlags) *cobra.Command {
	var (
		name   string
		all    bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a lab's machines and where its cluster file, key and known_hosts are",
		Example: `  sudo anvil lab status
  sudo anvil lab status --name t -o json
  sudo anvil lab status --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m := f.manager(a)
			if all {
				labs, err := m.List(cmd.Context())
				if err != nil {
					return err
				}
				if labs == nil {
					labs = []lab.Status{}
				}
				return printOutput(a.out, output, labs, func() error {
					for i := range labs {
						if i > 0 {
							fmt.Fprintln(a.out)
						}
						if err := printLab(a.out, &labs[i]); err != nil {
							return err
						}
					}
					return nil
				})
			}
			st, err := m.Status(cmd.Context(), name)
			if err != nil {
				return err
			}
			return printOutput(a.out, output, st, func() error { return printLab(a.out, st) })
		},
	}
	cmd.Flags().StringVar(&name, "name", lab.DefaultName, "the lab")
	cmd.Flags().BoolVar(&all, "all", false, "every lab on this host")
	addOutputFlag(cmd, &output)
	return cmd
}

func printLab(w io.Writer, st *lab.Status) error {
	vip := fmt.Sprintf("%s is free for a VIP", st.VIP)
	masters := 0
	for _, m := range st.Machines {
		if m.Role == v1alpha1.RoleMaster {
			masters++
		}
	}
	if masters >= 2 {
		vip = fmt.Sprintf("VIP %s, the cluster file's endpoint", st.VIP)
	}
	fmt.Fprintf(w, "lab %s: %s on bridge %s (host side %s; %s)\n", st.Name, st.Subnet, st.Bridge, st.Gateway, vip)
	fmt.Fprintf(w, "cluster file  %s\n", st.ClusterFile)
	fmt.Fprintf(w, "ssh key       %s (users %s, %s with sudo)\n", st.SSHKey, st.SSHUser, st.SudoUser)
	fmt.Fprintf(w, "backup key    %s (age identity the cluster's backups are encrypted to)\n", st.BackupKey)
	fmt.Fprintf(w, "known_hosts   %s\n\n", st.KnownHosts)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tROLE\tADDRESS\tSTATE\tLINK\tPID\tMEMORY\tHOST KEY")
	for _, m := range st.Machines {
		pid, mem := "-", "-"
		if m.PID > 0 {
			pid = fmt.Sprint(m.PID)
		}
		if m.Memory > 0 {
			mem = fmt.Sprintf("%.0f MiB", float64(m.Memory)/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Role, m.Address, m.State, m.Link, pid, mem, m.HostKey)
	}
	return tw.Flush()
}

func newLabSSHCmd(a *app, f *labFlags) *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:   "ssh MACHINE [-- COMMAND...]",
		Short: "Run a command on a lab machine, or open a shell, over SSH",
		Long: `Connects with the lab's key, checking the machine's host key strictly against
the lab's known_hosts. With a command, runs it (its words joined by spaces,
as ssh does), streams standard input to it and exits with its exit status.
Without one, opens a login shell: on a terminal, interactively.`,
		Example: `  sudo anvil lab ssh t-m1 -- systemctl is-system-running
  sudo anvil lab ssh t-w1 --user debian -- sudo -n id
  sudo anvil lab ssh t-m1 -- sh -s < script.sh
  sudo anvil lab ssh t-m1`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || (dash < 0 && len(args) > 1) {
				return usageError("put the remote command after --: anvil lab ssh %s -- %s", args[0], strings.Join(args[1:], " "))
			}
			ctx := cmd.Context()
			c, err := f.manager(a).Dial(ctx, args[0], user)
			if err != nil {
				return err
			}
			defer c.Close()
			if len(args) > 1 {
				err = c.Run(ctx, strings.Join(args[1:], " "), a.in, a.out, a.errOut)
			} else if in, ok := a.in.(*os.File); ok && isTerminal(in) {
				err = interactive(cmd, c, in, a.out, a.errOut)
			} else {
				err = c.Run(ctx, `exec "${SHELL:-/bin/sh}" -l`, a.in, a.out, a.errOut)
			}
			// Exit codes as ssh(1) gives them: the command's, or 255 when
			// the connection or the command's end went wrong.
			var exit *sshx.ExitError
			switch {
			case errors.As(err, &exit) && exit.Signal == "":
				return exitError{code: exit.Status}
			case err != nil:
				return exitError{code: 255, msg: err.Error()}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "user", "l", "root", "remote user (every machine also has "+lab.SudoUser+", with passwordless sudo)")
	return cmd
}

// interactive runs a login shell on a pseudo-terminal with the local one in
// raw mode, following its size.
func interactive(cmd *cobra.Command, c *sshx.Client, in *os.File, out, errOut io.Writer) error {
	fd := int(in.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	defer func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }()

	size := func() sshx.WindowSize {
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err != nil || ws.Col == 0 {
			return sshx.WindowSize{Width: 80, Height: 24}
		}
		return sshx.WindowSize{Width: int(ws.Col), Height: int(ws.Row)}
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	resize := make(chan sshx.WindowSize, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-winch:
				select {
				case resize <- size():
				default:
				}
			}
		}
	}()
	term := os.Getenv("TERM")
	return c.Shell(cmd.Context(), sshx.Terminal{Term: term, Size: size(), Resize: resize}, in, out, errOut)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newLabStopCmd(a *app, f *labFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "stop MACHINE",
		Short: "Power a machine off, keeping its disk, address and host key",
		Long: `Shuts the machine down as its power button would (systemd stops its units),
or with --force at once, as pulling the plug would. 'lab start' boots it
again as it was. Stopping a stopped machine does nothing.`,
		Example: `  sudo anvil lab stop t-m2
  sudo anvil lab stop t-m2 --force`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.manager(a).Stop(cmd.Context(), args[0], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "kill the machine at once instead of shutting it down")
	return cmd
}

func newLabStartCmd(a *app, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "start MACHINE",
		Short: "Boot a stopped machine and wait until it answers ssh",
		Long: `Boots the machine on the same tree, address and host key it had, and returns
once sshd answers with that key and systemd has finished booting. Starting a
running machine does nothing.`,
		Example: `  sudo anvil lab start t-m2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.manager(a).Start(cmd.Context(), args[0])
		},
	}
}

func newLabLinkCmd(a *app, f *labFlags, verb string) *cobra.Command {
	short := "Cut a machine off the lab network, as if its cable were pulled"
	long := `Takes the host end of the machine's link down: the machine keeps running, but
it reaches nothing and nothing reaches it, until 'lab heal'.`
	if verb == "heal" {
		short = "Reconnect a machine that 'lab cut' cut off"
		long = `Brings the host end of the machine's link back up; traffic flows at once.`
	}
	return &cobra.Command{
		Use:     verb + " MACHINE",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  sudo anvil lab %s t-m3", verb),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m := f.manager(a)
			if verb == "heal" {
				return m.Heal(cmd.Context(), args[0])
			}
			return m.Cut(cmd.Context(), args[0])
		},
	}
}

func newLabDownCmd(a *app, f *labFlags) *cobra.Command {
	var (
		name string
		all  bool
	)
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove a lab: machines, bridge, links, cgroups, mounts and files",
		Long: `Kills the lab's machines and removes everything the lab made, finding it from
the lab's state, its cgroups, its processes and its interfaces, so it also
cleans up after a crash. Removing a lab that is not there succeeds. The base
file system stays cached for the next 'lab up'. When no lab is left on this
host, the kernel settings labs changed get their previous values back.`,
		Example: `  sudo anvil lab down --name t
  sudo anvil lab down --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m := f.manager(a)
			if all {
				return m.DownAll(cmd.Context())
			}
			if err := m.Down(cmd.Context(), name); err != nil {
				return err
			}
			a.progress("lab " + name + ": removed")
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", lab.DefaultName, "the lab")
	cmd.Flags().BoolVar(&all, "all", false, "every lab on this host, and the remains of labs whose state is gone")
	return cmd
}
