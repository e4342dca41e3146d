package layout

import (
	"errors"
	"fmt"
	"testing"

	godbus "github.com/godbus/dbus/v5"
)

// TestIsNoSuchUnit: systemd's answers are told apart by their D-Bus error
// names, never by their wording.
func TestIsNoSuchUnit(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit", Body: []any{"Unit x.service not loaded."}}, true},
		{fmt.Errorf("stop: %w", godbus.Error{Name: "org.freedesktop.DBus.Error.FileNotFound"}), true},
		{godbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied", Body: []any{"Unit not loaded, access denied"}}, false},
		{errors.New("Unit x.service not loaded."), false},
	} {
		if got := isNoSuchUnit(tc.err); got != tc.want {
			t.Errorf("isNoSuchUnit(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
