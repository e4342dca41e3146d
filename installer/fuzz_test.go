package installer

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/pki"
)

// The installer reads what hosts send back (the facts script's output, the
// upload stream a host's anvil receives) and puts what the cluster file
// says into commands a remote shell runs. A host is not trusted to send
// well-formed output, and a cluster file is not trusted to hold only tame
// names: these fuzzers check that neither can crash the installer, write
// outside the directories an upload owns, or break out of a shell command.

// FuzzParseFacts: whatever a host prints, parsing it returns facts or an
// error, never a panic, and the facts are ones the later phases can use.
func FuzzParseFacts(f *testing.F) {
	for _, name := range []string{"facts-m1", "facts-w1"} {
		out, err := os.ReadFile("testdata/" + name + ".stdout")
		if err != nil {
			f.Fatal(err)
		}
		errOut, err := os.ReadFile("testdata/" + name + ".stderr")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(compactFacts(append(out, errOut...)))
	}
	f.Add([]byte(sectionMark + "end@@\n"))
	f.Add([]byte(sectionMark + "listen@@\n#proc\n  0: 0100007F:0CEA 00000000:0000 0A\n" + sectionMark + "end@@\n"))
	sent := time.Unix(1795442076, 0)
	f.Fuzz(func(t *testing.T, out []byte) {
		facts, err := parseFacts(out, sent, sent.Add(40*time.Millisecond))
		if err != nil {
			return
		}
		// What the other phases do with facts.
		_ = summarizeFacts(facts)
		_ = facts.Member()
		_ = facts.ControlPlane()
		for name, sum := range facts.Installed {
			if !isSHA256(sum) || name == "" {
				t.Errorf("installed %q with sha256 %q", name, sum)
			}
		}
		c, hosts := fuzzFleet(facts)
		validateFacts(c, &bundle{arch: "x86_64"}, hosts, false)
	})
}

// compactFacts keeps the first two lines of each section of a facts
// script's output: every kind of line, in little enough input that the
// fuzzer spends its time mutating rather than minimising.
func compactFacts(out []byte) []byte {
	var b bytes.Buffer
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if markRE.MatchString(line) {
			n = 0
		} else if n++; n > 2 {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.Bytes()
}

// fuzzFleet is a master and a worker that both have facts.
func fuzzFleet(facts *Facts) (*v1alpha1.Cluster, []*host) {
	c := &v1alpha1.Cluster{Name: "t", KubernetesVersion: v1alpha1.DefaultKubernetesVersion, ControlPlane: v1alpha1.ControlPlane{Port: 6443}}
	var hosts []*host
	for _, h := range []v1alpha1.Host{{Name: "m1", Role: v1alpha1.RoleMaster}, {Name: "w1", Role: v1alpha1.RoleWorker}} {
		hosts = append(hosts, &host{Host: h, facts: facts})
	}
	return c, hosts
}

// FuzzReceive: whatever arrives on the upload stream, Receive lands only
// complete, verified files in dir (one subdirectory deep at most) and links
// to them in linkDir, and leaves
// nothing anywhere else, nor a temporary file behind.
func FuzzReceive(f *testing.F) {
	src, cache := f.TempDir(), f.TempDir()
	comp, err := newCompressor(cache)
	if err != nil {
		f.Fatal(err)
	}
	file := localFile(f, src, "kubectl", 64)
	var stream bytes.Buffer
	if _, err := writeStream(context.Background(), &stream, comp, []byte(`{"files":[]}`+"\n"), upload{files: []bundleFile{file}, manifest: true, links: []hostLink{{name: "kubectl"}}}, noMeter); err != nil {
		f.Fatal(err)
	}
	f.Add(stream.Bytes())
	f.Add([]byte(`{"op":"link","name":"../../etc/passwd"}` + "\n" + `{"op":"end"}` + "\n"))
	f.Add([]byte(`{"op":"file","name":"x","size":3,"sha256":"` + strings.Repeat("0", 64) + `","zsize":2}` + "\nab"))
	f.Fuzz(func(t *testing.T, in []byte) {
		root := t.TempDir()
		dir, linkDir := filepath.Join(root, "opt", "v1"), filepath.Join(root, "bin")
		_ = Receive(context.Background(), bytes.NewReader(in), &bytes.Buffer{}, ReceiveOptions{Dir: dir, LinkDirs: []string{linkDir}})
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			switch {
			case rel == "opt" || rel == "bin" || rel == filepath.Join("opt", "v1"):
			// One level of subdirectories (cni/, images/).
			case d.IsDir() && filepath.Dir(rel) == filepath.Join("opt", "v1") && !strings.HasPrefix(d.Name(), "."):
			case strings.HasPrefix(rel, "opt/v1/") && strings.Count(rel, "/") <= 3 && !d.IsDir() && !strings.HasPrefix(d.Name(), "."):
				if !d.Type().IsRegular() {
					t.Errorf("%s is not a regular file", rel)
				}
			case strings.HasPrefix(rel, "bin/") && d.Type()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				if filepath.Dir(target) != dir && filepath.Dir(filepath.Dir(target)) != dir {
					t.Errorf("%s links to %s, outside %s", rel, target, dir)
				}
			default:
				t.Errorf("the upload left %s (%s)", rel, d.Type())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzShellQuote: a value ShellQuote quotes reaches the command as exactly
// that one word, whatever it holds (host names from the cluster file and
// descriptions go into remote commands this way).
func FuzzShellQuote(f *testing.F) {
	for _, s := range []string{"", "m1", "it's", "a b", "$(reboot)", "`id`", "x;y", "\\", "'", "\n", "--flag", "ü", "%s"} {
		f.Add(s)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Skip("no sh")
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsRune(s, 0) {
			return // no argument can hold NUL
		}
		out, err := exec.Command(sh, "-c", "printf '%s' "+sshx.ShellQuote(s)).Output()
		if err != nil {
			t.Fatalf("sh -c printf %s: %v", sshx.ShellQuote(s), err)
		}
		if string(out) != s {
			t.Errorf("ShellQuote(%q) = %s reached the command as %q", s, sshx.ShellQuote(s), out)
		}
	})
}

// FuzzClusterFileCommands: for every cluster file that decodes, the
// remote commands apply builds from it are valid shell, and the words of
// a join reach it as the file's values, unmangled: no name, endpoint or
// version breaks out of its quotes.
func FuzzClusterFileCommands(f *testing.F) {
	f.Add([]byte("apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: t\nhosts:\n  - {name: m1, address: 10.0.0.1, role: master}\n  - {name: w1, address: 10.0.0.2, role: worker}\n"))
	f.Add([]byte("apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: t\ncontrolPlane: {endpoint: api.example.com, port: 443}\nssh: {user: debian, sudo: true}\nhosts:\n  - {name: m-1.example, address: 10.0.0.1, role: master, ssh: {port: 2222}}\n"))
	f.Add([]byte("apiVersion: anvil.dev/v1alpha1\nkind: Cluster\nname: t\nkubernetesVersion: v1.37.2\nhosts:\n  - {name: \"m1'; reboot; '\", address: 10.0.0.1, role: master}\n"))
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Skip("no sh")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := v1alpha1.Decode("cluster.yaml", data)
		if err != nil {
			return
		}
		r := &run{cluster: c, apply: &applyState{o: ApplyOptions{Timeout: time.Minute, TokenTTL: time.Minute}, bundle: &bundle{version: c.KubernetesVersion}, clusterFile: data}}
		for _, h := range c.Hosts {
			hh := &host{Host: h, facts: &Facts{}}
			_ = describeSSH(h)
			args := r.workerJoinArgs(hh, pki.CAHash{})
			out, err := exec.Command(sh, "-c", `printf '%s\0' `+shellJoin(args)).Output()
			if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); err != nil || !slices.Equal(got, args) {
				t.Fatalf("join of host %q: the shell got %q, want %q (%v)", h.Name, got, args, err)
			}
			script, _ := r.joinScript(hh, args, masterJoined(), undoMasterJoin(r, &host{Host: h, facts: &Facts{Leftovers: []string{"/etc/anvil"}}}), "secret", "key")
			for _, cmd := range []string{initCommand(r, hh), script, resetScript(false), factsScript(factsRequest{version: c.KubernetesVersion})} {
				if out, err := exec.Command(sh, "-n", "-c", cmd).CombinedOutput(); err != nil {
					t.Fatalf("not valid shell for host %q: %v\n%s\n%s", h.Name, err, out, cmd)
				}
			}
		}
	})
}
