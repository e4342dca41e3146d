package sdnotify

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready tells systemd the daemon is up (Type=notify units wait for it).
func Ready(status string) {
	daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS="+status)
}

// Status updates the one-line status `systemctl status` shows.
func Status(status string) { daemon.SdNotify(false, "STATUS="+status) }

// Stopping tells systemd a clean stop has begun.
func Stopping() { daemon.SdNotify(false, daemon.SdNotifyStopping) }

// Watchdog pings systemd's watchdog at half its interval for as long as ctx
// lives and healthy says so; it returns at once when no watchdog is set. A
// daemon that hangs stops pinging and systemd restarts it.
func Watchdog(ctx context.Context, healthy func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	go func() {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if healthy() {
					daemon.SdNotify(false, daemon.SdNotifyWatchdog)
				}
			}
		}
	}()
}
