// Package calendar reads the subset of systemd's calendar expressions
// (systemd.time(7)) a backup schedule uses, and says when one next fires,
// so the process layout, where no systemd runs timers, keeps the same
// schedule a systemd timer would. It imports nothing of anvil's.
package calendar
