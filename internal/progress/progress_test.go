package progress

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake time source tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestPlainLines(t *testing.T) {
	clk := newClock()
	var out bytes.Buffer
	r := New(&out, Options{Now: clk.Now})
	m1, w1 := r.Task("m1"), r.Task("w1")
	m1.Start("connect", "root@10.0.0.10:22")
	w1.Start("connect", "debian@10.0.0.11:22 (sudo)")
	clk.advance(40 * time.Millisecond)
	m1.Done("")
	w1.Done("")
	m1.Start("upload", "4 files, 117 MB")
	m1.Detail("kube-apiserver 12/30 MB") // live view only
	clk.advance(1500 * time.Millisecond)
	m1.Done("4 files, 117 MB")
	w1.Start("upload", "nothing to upload")
	w1.Done("")
	r.Say("creating a join token on %s", "m1")
	w1.Start("join", "anvil join https://10.0.0.10:6443")
	clk.advance(2 * time.Second)
	w1.Fail(errors.New("exit status 1: connection refused"))
	m1.Skip("join", "nothing to do: a master")
	m1.Finish()
	r.Close()

	want := `[   0.00s] m1   connect      root@10.0.0.10:22
[   0.00s] w1   connect      debian@10.0.0.11:22 (sudo)
[   0.04s] m1   connect      done in 40ms
[   0.04s] w1   connect      done in 40ms
[   0.04s] m1   upload       4 files, 117 MB
[   1.54s] m1   upload       done in 1.5s: 4 files, 117 MB
[   1.54s] w1   upload       nothing to upload
[   1.54s] w1   upload       done in 0ms
[   1.54s] creating a join token on m1
[   1.54s] w1   join         anvil join https://10.0.0.10:6443
[   3.54s] w1   join         FAILED: exit status 1: connection refused
[   3.54s] m1   join         nothing to do: a master

HOST  CONNECT  UPLOAD  JOIN   RESULT
m1    40ms     1.5s    -      ok
w1    40ms     0ms     2.0s!  FAILED in join: exit status 1: connection refused
`
	if got := out.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	res := r.Results()
	if len(res["w1"]) != 3 || !res["w1"][2].Failed || res["m1"][2].Phase != "join" || !res["m1"][2].Skipped {
		t.Errorf("results %+v", res)
	}
}

func TestLiveView(t *testing.T) {
	clk := newClock()
	var out lockedBuffer
	r := New(&out, Options{Live: true, Now: clk.Now, Interval: time.Hour, Width: 60})
	m1, w1 := r.Task("m1"), r.Task("w1")
	m1.Start("upload", "4 files")
	w1.Start("facts", "reading")
	clk.advance(2 * time.Second)
	m1.Detail("kube-apiserver 12/30 MB and a very long tail that will not fit")
	r.mu.Lock()
	r.redraw()
	r.mu.Unlock()
	first := out.String()
	for _, want := range []string{"m1    upload", "2.0s", "kube-apiserver 12/30", "w1    facts", "…"} {
		if !strings.Contains(first, want) {
			t.Errorf("live view %q lacks %q", first, want)
		}
	}
	if strings.Contains(first, "will not fit") {
		t.Errorf("line not cut to the width: %q", first)
	}
	w1.Fail(errors.New("boom"))
	m1.Finish()
	r.Close()
	all := out.String()
	// The failure is a permanent line printed over the view, which is then
	// redrawn: cursor up over two rows, clear to the end.
	if !strings.Contains(all, "\x1b[2F\x1b[J") || !strings.Contains(all, "w1   facts        FAILED: boom\n") {
		t.Errorf("failure line not printed over the view: %q", all)
	}
	if !strings.Contains(all, "✗ w1    FAILED in facts: boom") || !strings.Contains(all, "m1    done") {
		t.Errorf("final view: %q", all)
	}
	if !strings.HasSuffix(all, "HOST  UPLOAD  FACTS  RESULT\nm1    2.0s    -      ok\nw1    -       2.0s!  FAILED in facts: boom\n") {
		t.Errorf("summary: %q", all)
	}
}

func TestRedrawsOnItsOwn(t *testing.T) {
	var out lockedBuffer
	r := New(&out, Options{Live: true, Interval: 5 * time.Millisecond})
	r.Task("m1").Start("connect", "dialling")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "dialling") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.Close()
	r.Close()
	if !strings.Contains(out.String(), "m1    connect") {
		t.Errorf("no live row: %q", out.String())
	}
}

func TestForTerminalIsPlainForBuffers(t *testing.T) {
	if o := ForTerminal(&bytes.Buffer{}); o.Live {
		t.Error("a buffer is not a terminal")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestDeclaredPhaseOrder(t *testing.T) {
	var out bytes.Buffer
	r := New(&out, Options{})
	r.Phases("connect", "reset-workers", "reset-masters", "unused")
	m1, w1 := r.Task("m1"), r.Task("w1")
	m1.Start("reset-masters", "")
	w1.Start("reset-workers", "")
	w1.Start("connect", "")
	m1.Finish()
	w1.Finish()
	r.Close()
	if !strings.Contains(out.String(), "HOST  CONNECT  RESET-WORKERS  RESET-MASTERS  RESULT\n") {
		t.Errorf("columns:\n%s", out.String())
	}
}
