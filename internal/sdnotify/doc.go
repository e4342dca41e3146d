// Package sdnotify tells systemd how anvil's daemons (anvil etcd, anvil
// agent) are doing: READY=1 once they serve, WATCHDOG=1 while they are
// healthy, STOPPING=1 on the way out. Outside systemd every call is a no-op.
//
// It never exits or restarts anything: systemd does.
package sdnotify
