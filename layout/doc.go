// Package layout starts and stops rendered components the way their layout
// runs them: systemd units through systemd's D-Bus API, supervised
// processes through anvil's own supervisor, static pods by leaving them to
// the kubelet. Rendering (component) and deciding what runs (master, agent)
// happen elsewhere; this package only turns "these components, this layout"
// into running or stopped processes.
//
// It never renders a component and never decides which ones run.
package layout
