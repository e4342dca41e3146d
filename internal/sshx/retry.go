package sshx

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
)

// Transient reports whether a failed Dial may succeed if tried again: the
// host refused, reset or dropped the connection (sshd restarting, its
// MaxStartups limit), could not be reached, or did not answer in time. A
// refused host key, a failed authentication or a cancelled context are
// never transient: trying again cannot change them.
func Transient(err error) bool {
	var unknown *UnknownHostError
	var changed *HostKeyChangedError
	var revoked *RevokedHostKeyError
	var sudo *SudoError
	switch {
	case err == nil:
		return false
	case errors.As(err, &unknown), errors.As(err, &changed), errors.As(err, &revoked), errors.As(err, &sudo):
		return false
	case errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, context.DeadlineExceeded):
		// Dial's own per-attempt timeout; the caller's context is checked
		// separately.
		return true
	}
	for _, errno := range []syscall.Errno{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.ETIMEDOUT,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
