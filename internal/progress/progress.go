package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"
)

// Options change how a Reporter draws.
type Options struct {
	// Live redraws one line per task in place (a terminal); otherwise every
	// change of phase is one plain line.
	Live bool
	// Width truncates live lines so that redrawing stays in place; 0 means
	// no limit.
	Width int
	// Interval between redraws of the live view; 0 means 100ms.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NoSummary leaves out the summary table Close prints (a command on one
	// machine, whose phases the lines above already show).
	NoSummary bool
}

// ForTerminal returns the options for w: live, as wide as the terminal,
// when w is one; plain lines otherwise.
func ForTerminal(w io.Writer) Options {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return Options{}
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		width = 0
	}
	return Options{Live: true, Width: width}
}

// State is where a task stands.
type State int

const (
	Pending State = iota // not started, or between phases
	Running
	OK
	Failed
)

// PhaseResult is one phase a task went through.
type PhaseResult struct {
	Phase   string
	Elapsed time.Duration
	// Result is a short outcome ("3 files, 117 MB", "nothing to do"), or
	// the error of a failed phase.
	Result string
	Failed bool
	// Skipped phases were not run for this task.
	Skipped bool
}

// Reporter draws the progress of a set of tasks on one writer. It is safe
// for concurrent use.
type Reporter struct {
	w     io.Writer
	o     Options
	start time.Time

	mu       sync.Mutex
	tasks    []*Task
	phases   []string
	warnings []string
	drawn    int // lines of the live view now on screen
	closed   bool
	stop     chan struct{}
	done     chan struct{}
}

// New starts a reporter writing to w.
func New(w io.Writer, o Options) *Reporter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	r := &Reporter{w: w, o: o, start: o.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if o.Live {
		go r.loop()
	} else {
		close(r.done)
	}
	return r
}

// Task adds a row, shown in the order tasks were added.
func (r *Reporter) Task(name string) *Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &Task{r: r, name: name}
	r.tasks = append(r.tasks, t)
	return t
}

// Phases declares the order of the summary table's columns (phases not
// declared follow in the order they first appeared).
func (r *Reporter) Phases(names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases[:0], names...)
}

// Say prints a line that is not about one task ("creating a join token").
func (r *Reporter) Say(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.line("%s %s", r.stamp(), fmt.Sprintf(format, args...))
}

// Close stops the live view, draws it a last time and prints the summary
// table. It is safe to call more than once.
func (r *Reporter) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.stop)
	r.mu.Unlock()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.o.Live {
		r.redraw()
		r.drawn = 0
	}
	if !r.o.NoSummary {
		fmt.Fprintln(r.w)
		r.summary(r.w)
	}
}

// Warnings returns every warning any task gave, in order, each as
// "TASK: message".
func (r *Reporter) Warnings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.warnings...)
}

// Elapsed is the time since the reporter started.
func (r *Reporter) Elapsed() time.Duration { return r.o.Now().Sub(r.start) }

// Results returns, per task in order, the phases it went through.
func (r *Reporter) Results() map[string][]PhaseResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]PhaseResult{}
	for _, t := range r.tasks {
		out[t.name] = append([]PhaseResult(nil), t.phases...)
	}
	return out
}

func (r *Reporter) loop() {
	defer close(r.done)
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
			r.mu.Lock()
			r.redraw()
			r.mu.Unlock()
		}
	}
}

func (r *Reporter) stamp() string {
	return fmt.Sprintf("[%7.2fs]", r.o.Now().Sub(r.start).Seconds())
}

// line prints one permanent line; in the live view above the task rows,
// which are drawn again below it. Callers hold mu.
func (r *Reporter) line(format string, args ...any) {
	if r.o.Live {
		r.clear()
	}
	fmt.Fprintf(r.w, format+"\n", args...)
	if r.o.Live && !r.closed {
		r.redraw()
	}
}

// clear moves the cursor up over the live rows and erases them.
func (r *Reporter) clear() {
	if r.drawn == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\x1b[%dF", r.drawn)
	b.WriteString("\x1b[J")
	io.WriteString(r.w, b.String())
	r.drawn = 0
}

// redraw draws the task rows again in place.
func (r *Reporter) redraw() {
	var b strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dF", r.drawn)
	}
	width := r.nameWidth()
	now := r.o.Now()
	for _, t := range r.tasks {
		b.WriteString("\x1b[2K")
		b.WriteString(r.fit(t.row(width, now)))
		b.WriteByte('\n')
	}
	io.WriteString(r.w, b.String())
	r.drawn = len(r.tasks)
}

func (r *Reporter) fit(s string) string {
	if r.o.Width <= 0 || utf8.RuneCountInString(s) < r.o.Width {
		return s
	}
	runes := []rune(s)
	return string(runes[:r.o.Width-2]) + "…"
}

func (r *Reporter) nameWidth() int {
	n := 4
	for _, t := range r.tasks {
		n = max(n, utf8.RuneCountInString(t.name))
	}
	return n
}

// Task is one row of the view: a host going through phases. Every method
// of a nil *Task does nothing, so code that reports progress needs no check
// for a caller that does not want it.
type Task struct {
	r          *Reporter
	name       string
	state      State
	phase      string
	phaseStart time.Time
	detail     string
	err        error
	phases     []PhaseResult
	total      time.Duration
}

// line prints a permanent line of this task: time, task, phase, msg.
// The caller holds r.mu.
func (t *Task) line(phase, msg string) {
	r := t.r
	r.line("%s %-*s %-12s %s", r.stamp(), r.nameWidth(), t.name, phase, msg)
}

// Name is the task's name.
func (t *Task) Name() string {
	if t == nil {
		return ""
	}
	return t.name
}

// Start begins phase, ending a phase still running as done. detail says
// what the phase is about to do; it is shown until Detail replaces it.
func (t *Task) Start(phase, detail string) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state == Failed {
		return
	}
	if t.state == Running {
		t.finish("", false)
	}
	t.state, t.phase, t.detail, t.phaseStart = Running, phase, detail, r.o.Now()
	if !r.o.Live {
		t.line(phase, detail)
	}
}

// Detail changes what the current phase says it is doing. Only the live
// view shows it, so frequent calls (byte counts) cost nothing in logs.
func (t *Task) Detail(format string, args ...any) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	t.detail = fmt.Sprintf(format, args...)
}

// Say prints a permanent line about this task in its current phase.
func (t *Task) Say(format string, args ...any) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	t.line(t.phase, fmt.Sprintf(format, args...))
}

// Warn prints a warning about this task: something the operator should
// know or fix that did not stop the command. Warnings are kept, for
// Reporter.Warnings, and marked as such in every form of output.
func (t *Task) Warn(format string, args ...any) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	r.warnings = append(r.warnings, t.name+": "+msg)
	t.line(t.phase, "WARNING: "+msg)
}

// Done ends the current phase successfully with a short result.
func (t *Task) Done(result string) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state != Running {
		return
	}
	elapsed := t.finish(result, false)
	t.state = Pending
	if !r.o.Live || result != "" {
		t.line(t.phase, "done in "+round(elapsed)+suffix(result))
	}
}

// Fail ends the current phase, and the task, with err.
func (t *Task) Fail(err error) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state == Failed {
		return
	}
	if t.state == Running {
		t.finish(err.Error(), true)
	} else {
		t.phases = append(t.phases, PhaseResult{Phase: t.phase, Result: err.Error(), Failed: true})
	}
	t.state, t.err = Failed, err
	t.line(t.phase, "FAILED: "+err.Error())
}

// Skip records that phase had nothing to do for this task, and why; plain
// output says so in one line.
func (t *Task) Skip(phase, reason string) {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state == Failed {
		return
	}
	if t.state == Running {
		t.finish("", false)
		t.state = Pending
	}
	t.phase = phase
	t.phases = append(t.phases, PhaseResult{Phase: phase, Result: reason, Skipped: true})
	if !r.o.Live {
		t.line(phase, reason)
	}
}

// Finish marks the task as completed; its row says so with the total
// time.
func (t *Task) Finish() {
	if t == nil {
		return
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state == Failed {
		return
	}
	if t.state == Running {
		t.finish("", false)
	}
	t.state = OK
	t.total = r.o.Now().Sub(r.start)
}

// Failed reports whether the task failed.
func (t *Task) Failed() bool {
	if t == nil {
		return false
	}
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	return t.state == Failed
}

// finish records the running phase. Callers hold mu.
func (t *Task) finish(result string, failed bool) time.Duration {
	elapsed := t.r.o.Now().Sub(t.phaseStart)
	t.phases = append(t.phases, PhaseResult{Phase: t.phase, Elapsed: elapsed, Result: result, Failed: failed})
	return elapsed
}

func (t *Task) row(width int, now time.Time) string {
	switch t.state {
	case OK:
		return fmt.Sprintf("  %-*s  done         %8s", width, t.name, round(t.total))
	case Failed:
		return fmt.Sprintf("✗ %-*s  FAILED in %s: %v", width, t.name, t.phase, t.err)
	case Running:
		return fmt.Sprintf("  %-*s  %-12s %8s  %s", width, t.name, t.phase, round(now.Sub(t.phaseStart)), t.detail)
	default:
		if t.phase == "" {
			return fmt.Sprintf("  %-*s  waiting", width, t.name)
		}
		return fmt.Sprintf("  %-*s  %-12s     done  waiting for the other hosts", width, t.name, t.phase)
	}
}

// summary prints one row per task and one column per phase, in the order
// phases first appeared, then the result.
func (r *Reporter) summary(w io.Writer) {
	cols := r.summaryColumns()
	header := []string{"HOST"}
	header = append(header, upper(cols)...)
	header = append(header, "RESULT")
	rows := [][]string{header}
	for _, t := range r.tasks {
		rows = append(rows, t.summaryRow(cols))
	}
	writeTable(w, rows)
}

// summaryColumns are the phases any task went through: those the reporter
// was told of first, in its order, then the others as tasks met them.
func (r *Reporter) summaryColumns() []string {
	var cols []string
	seen := map[string]bool{}
	used := map[string]bool{}
	for _, t := range r.tasks {
		for _, p := range t.phases {
			used[p.Phase] = true
		}
	}
	for _, p := range r.phases {
		if used[p] && !seen[p] {
			seen[p] = true
			cols = append(cols, p)
		}
	}
	for _, t := range r.tasks {
		for _, p := range t.phases {
			if !seen[p.Phase] {
				seen[p.Phase] = true
				cols = append(cols, p.Phase)
			}
		}
	}
	return cols
}

// summaryRow is t's row: its name, the time it spent in each phase of cols
// ("-" when it did not run it, "!" after one that failed), its result.
func (t *Task) summaryRow(cols []string) []string {
	row := []string{t.name}
	type agg struct {
		elapsed     time.Duration
		ran, failed bool
	}
	byPhase := map[string]agg{}
	for _, p := range t.phases {
		a := byPhase[p.Phase]
		if !p.Skipped {
			a.ran = true
			a.elapsed += p.Elapsed
		}
		a.failed = a.failed || p.Failed
		byPhase[p.Phase] = a
	}
	for _, c := range cols {
		a := byPhase[c]
		switch {
		case !a.ran:
			row = append(row, "-")
		case a.failed:
			row = append(row, round(a.elapsed)+"!")
		default:
			row = append(row, round(a.elapsed))
		}
	}
	switch t.state {
	case Failed:
		row = append(row, fmt.Sprintf("FAILED in %s: %v", t.phase, t.err))
	case OK:
		row = append(row, "ok")
	default:
		row = append(row, "not finished")
	}
	return row
}

// writeTable writes rows as columns two spaces apart; the last column is
// not padded, so a long result does not widen the table.
func writeTable(w io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row[:len(row)-1] {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			if i == len(row)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func upper(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = strings.ToUpper(x)
	}
	return out
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// round prints d the way the view does: milliseconds below a second,
// tenths of a second below a minute, whole seconds above.
func round(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}
