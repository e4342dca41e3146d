// Package agent is the node agent every machine runs (`anvil agent`): it
// joins with a bootstrap token, gets its client certificate through the CSR
// API, registers the Node, renews its Lease as the heartbeat and reports the
// machine's facts.
//
// Component declares how the agent itself is run (its systemd unit, process
// spec or static pod come from that one declaration, through package
// component).
//
// It never runs control-plane logic: masters come from package master,
// which installs this agent on them too.
package agent
