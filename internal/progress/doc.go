// Package progress is the one reporter anvil's long, multi-host commands
// tell a person what they are doing through: per task (a host), the phase
// it is in and for how long, as a live multi-line view on a terminal or as
// plain timestamped lines otherwise (CI logs, a pipe), and a summary table
// at the end. It is separate from logging: logs are for debugging anvil,
// this is for the operator watching it.
//
// It never logs and never decides anything: commands say what happens, it
// shows it.
package progress
